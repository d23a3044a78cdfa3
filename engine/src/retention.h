// Retention: the horizon (oldest answerable seq and timestamp), shared with
// the compaction filters that drop what fell out of it. StoreImpl's
// UpdateHorizon, RetentionLoop, CompactNow, SetRetention and Retention are
// in retention.cc.
#ifndef CAIRN_ENGINE_RETENTION_H_
#define CAIRN_ENGINE_RETENTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "config.h"
#include "rocksdb/compaction_filter.h"

namespace cairn::internal {

// Retention horizon shared with the compaction filters.
struct Horizon {
  std::atomic<uint64_t> oldest_seq{0};        // seqs >= this are answerable
  std::atomic<uint64_t> oldest_timestamp{0};  // positions with ts >= this are
};

// The compaction filter of family `cf`: drops the records of that family
// that no answerable point can see any more (the rule per family is in
// retention.cc). Reads `horizon` on every call; it must outlive the filter.
std::unique_ptr<rocksdb::CompactionFilter> NewRetentionFilter(Cf cf, const Horizon* horizon);

// OUT_OF_RANGE for a request point the retention window no longer covers:
// "<what> is older than the retention window; oldest available seq is N"
// (or "timestamp is N"). `what` names the point, e.g. "from_seq 3".
enum class RetentionAxis { kSeq, kTimestamp };
absl::Status OlderThanRetention(std::string_view what, RetentionAxis axis, uint64_t oldest);

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_RETENTION_H_
