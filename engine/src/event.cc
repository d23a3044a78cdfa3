#include "cairn/event.h"

#include "absl/strings/str_cat.h"
#include "cairn/source.h"
#include "cairn/status.h"

namespace cairn {

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    auto c1 = n > 1 ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (n == 2 && c < 0xC2) return false;                                // overlong
    if (n == 3 && c == 0xE0 && c1 < 0xA0) return false;                  // overlong
    if (n == 3 && c == 0xED && c1 > 0x9F) return false;                  // surrogate
    if (n == 4 && c == 0xF0 && c1 < 0x90) return false;                  // overlong
    if (n == 4 && (c > 0xF4 || (c == 0xF4 && c1 > 0x8F))) return false;  // > U+10FFFF
    i += n;
  }
  return true;
}

absl::Status CheckName(std::string_view what, std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(AbslView(what), " is empty"));
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(AbslView(what), " is ", name.size(),
                                                   " bytes long; the limit is ", kMaxNameBytes));
  }
  if (!IsValidUtf8(name)) {
    return absl::InvalidArgumentError(absl::StrCat(AbslView(what), " is not valid UTF-8"));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7F) {
      return absl::InvalidArgumentError(absl::StrCat(AbslView(what), " '", AbslView(Excerpt(name)),
                                                     "' holds a control character"));
    }
  }
  return absl::OkStatus();
}

std::string Excerpt(std::string_view value, size_t max_bytes) {
  if (value.size() <= max_bytes) return std::string(value);
  size_t n = max_bytes;
  // Back up to a character boundary (never inside a UTF-8 sequence).
  while (n > 0 && (static_cast<unsigned char>(value[n]) & 0xC0) == 0x80) --n;
  return absl::StrCat(AbslView(value.substr(0, n)), "\xE2\x80\xA6 (", value.size(), " bytes)");
}

const char* OpName(Op op) {
  switch (op) {
    case Op::kUpsert:
      return "upsert";
    case Op::kPatch:
      return "patch";
    case Op::kDelete:
      return "delete";
    case Op::kTruncate:
      return "truncate";
  }
  return "unknown";
}

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kApplied:
      return "applied";
    case Outcome::kDuplicate:
      return "duplicate";
    case Outcome::kConflict:
      return "conflict";
  }
  return "unknown";
}

const char* SessionModeName(SessionMode mode) {
  switch (mode) {
    case SessionMode::kStream:
      return "stream";
    case SessionMode::kAccrue:
      return "accrue";
    case SessionMode::kReplace:
      return "replace";
    case SessionMode::kAtomic:
      return "atomic";
  }
  return "unknown";
}

}  // namespace cairn
