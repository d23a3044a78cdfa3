// Status helpers shared by cairn's code. Debian's abseil (20220623) has no
// status macros, so cairn defines the two it needs.
#ifndef CAIRN_STATUS_H_
#define CAIRN_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cairn {
// Debian's abseil has its own string_view type, not std::string_view:
// convert at absl call sites (absl::StrCat, status messages) with these.
inline absl::string_view AbslView(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view StdView(absl::string_view s) { return {s.data(), s.size()}; }
// Their former names, kept so code that embeds cairn still builds.
[[deprecated("use cairn::AbslView")]] inline absl::string_view Av(std::string_view s) {
  return AbslView(s);
}
[[deprecated("use cairn::StdView")]] inline std::string_view Sv(absl::string_view s) {
  return StdView(s);
}
}  // namespace cairn

#define CAIRN_CONCAT_INNER_(a, b) a##b
#define CAIRN_CONCAT_(a, b) CAIRN_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define CAIRN_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::absl::Status cairn_status_ = (expr);         \
    if (!cairn_status_.ok()) return cairn_status_; \
  } while (0)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns its status
// from the enclosing function when it is not OK.
#define CAIRN_ASSIGN_OR_RETURN(lhs, expr) \
  CAIRN_ASSIGN_OR_RETURN_IMPL_(CAIRN_CONCAT_(cairn_statusor_, __LINE__), lhs, expr)
#define CAIRN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#endif  // CAIRN_STATUS_H_
