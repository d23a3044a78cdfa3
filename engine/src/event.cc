#include "cairn/event.h"
#include "cairn/source.h"

namespace cairn {

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
  }
  return "unknown";
}

}  // namespace cairn
