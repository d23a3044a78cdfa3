#ifndef CAIRN_ENGINE_ROCKS_STATUS_H_
#define CAIRN_ENGINE_ROCKS_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "rocksdb/status.h"

namespace cairn::internal {

// The one place a rocksdb::Status becomes an absl::Status.
inline absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(AbslView(what), ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return absl::UnavailableError(msg);
  if (s.IsIOError() && s.subcode() == rocksdb::Status::kNoSpace) {
    return absl::ResourceExhaustedError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_ROCKS_STATUS_H_
