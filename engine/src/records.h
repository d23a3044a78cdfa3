// Encoding and verified decoding of the FlatBuffers records in fbs/. Every
// stored value passes through here: Read* verifies the buffer (including its
// file identifier) before any field is touched, and reports DATA_LOSS naming
// the column family when it does not verify.
#ifndef CAIRN_ENGINE_SRC_RECORDS_H_
#define CAIRN_ENGINE_SRC_RECORDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cairn/event.h"
#include "cairn/fbs/change_generated.h"
#include "cairn/fbs/entity_seq_generated.h"
#include "cairn/fbs/log_generated.h"
#include "cairn/fbs/session_generated.h"
#include "cairn/fbs/source_generated.h"
#include "cairn/fbs/staged_generated.h"
#include "cairn/fbs/state_generated.h"
#include "cairn/fbs/version_generated.h"
#include "cairn/source.h"

namespace cairn::records {

// An optional JSON document: nullopt means "no document" (absent/deleted).
using Doc = std::optional<std::string>;

inline constexpr uint64_t kNone = UINT64_MAX;

struct LogValue {
  Op op = Op::kUpsert;
  std::string payload;
  std::string raw;
  std::string event_id;
  bool snapshot = false;
  uint64_t seq = 0;
  uint64_t ingest_micros = 0;
};

struct StateValue {
  Doc doc;
  bool complete = true;
  Position position;
  std::string source;
  uint64_t seq = 0;
  uint64_t last_change_seq = 0;
  // Position of the entity_seq entry at last_change_seq: whether retention
  // may have dropped it (see fbs/state.fbs).
  Position change_position;
};

struct VersionValue {
  Op op = Op::kUpsert;
  uint64_t seq = 0;
  std::string patch;
  Doc after;
  bool complete = true;
  bool snapshot = false;
  uint64_t next_timestamp = kNone;
  // The event, when the version is an accepted event's (format 3; see
  // fbs/version.fbs); its payload is LoggedPayload.
  bool logged = false;
  std::string raw;
  std::string event_id;
};

// The canonical payload of the event a logged version records: the
// after-image of an upsert, the patch of a patch, empty for a delete.
inline std::string_view LoggedPayload(const VersionValue& v) {
  switch (v.op) {
    case Op::kUpsert:
      return v.after ? std::string_view(*v.after) : std::string_view();
    case Op::kPatch:
      return v.patch;
    default:
      return {};
  }
}

struct ChangeValue {
  std::string collection;
  std::string key_bytes;
  Op op = Op::kUpsert;
  Doc before;
  Doc after;
  Position position;
  std::string source;
  uint64_t commit_micros = 0;
  bool complete = true;
};

struct EntitySeqValue {
  Doc doc;  // format 1 entries; format 2 ones hold none (by_reference)
  bool complete = true;
  Position position;
  std::string source;
  uint64_t superseded_seq = kNone;
  // The document is not in the entry (fbs/entity_seq.fbs): the state's while
  // the entry is current, else the before-image of change superseded_seq.
  bool by_reference = false;
  bool exists = false;  // with by_reference: the entity existed after it

  bool deleted() const { return by_reference ? !exists : !doc.has_value(); }
};

enum class SessionState : uint8_t { kOpen = 0, kCommitted = 1, kDiscarded = 2 };

struct SessionValue {
  std::string source;
  std::string collection;
  SessionMode mode = SessionMode::kStream;
  SessionState state = SessionState::kOpen;
  uint64_t opened_micros = 0;
  uint64_t records = 0;
  // Stream sessions: what their posts applied (first_seq 0: nothing yet).
  uint64_t applied = 0;
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
};

struct StagedValue {
  Op op = Op::kUpsert;  // kUpsert or kDelete
  std::string doc;
};

std::string Encode(const LogValue& v);
std::string Encode(const SourceDefinition& v);
std::string Encode(const SessionValue& v);
std::string Encode(const StagedValue& v);
std::string Encode(const StateValue& v);
std::string Encode(const VersionValue& v);
std::string Encode(const ChangeValue& v);
std::string Encode(const EntitySeqValue& v);

// An atomic session's staged event: the whole event, in a StagedRecord.
std::string EncodeStagedEvent(const Event& e);
absl::StatusOr<Event> DecodeStagedEvent(std::string_view bytes);

absl::StatusOr<LogValue> DecodeLog(std::string_view bytes);
absl::StatusOr<SourceDefinition> DecodeSource(std::string_view bytes);
absl::StatusOr<SessionValue> DecodeSession(std::string_view bytes);
absl::StatusOr<StagedValue> DecodeStaged(std::string_view bytes);
absl::StatusOr<StateValue> DecodeState(std::string_view bytes);
absl::StatusOr<VersionValue> DecodeVersion(std::string_view bytes);
absl::StatusOr<ChangeValue> DecodeChange(std::string_view bytes);
// Only a change's before-image (what a snapshot as of a seq reads of the
// change that superseded an entity_seq entry).
absl::StatusOr<Doc> DecodeChangeBefore(std::string_view bytes);
absl::StatusOr<EntitySeqValue> DecodeEntitySeq(std::string_view bytes);

// The retention links, set on a stored record without decoding it where the
// field is stored (a record written before format 5, or one linked before),
// else by re-encoding it (format 5 stores the field only when set; only a
// tombstone gets a link): what the link merge operators (retention.h)
// apply. DATA_LOSS when `bytes` does not verify.
absl::StatusOr<std::string> SetVersionNext(std::string_view bytes, uint64_t next_timestamp);
absl::StatusOr<std::string> SetEntitySeqSuperseded(std::string_view bytes, uint64_t superseded_seq);

// Single-field reads for the compaction filter; nullopt when the buffer does
// not verify (the filter then keeps the entry).
std::optional<uint64_t> PeekVersionNext(std::string_view bytes);
std::optional<uint64_t> PeekEntitySeqSuperseded(std::string_view bytes);

// What a snapshot as of a past point needs to know of a state record before
// it seeks the entity's versions: a tombstone whose delete is at or before
// that point means the entity does not exist there. nullopt when the buffer
// does not verify (the caller then seeks as usual).
struct StatePeek {
  bool deleted = false;
  Position position;             // of the newest version
  uint64_t last_change_seq = 0;  // of the newest entity_seq entry
};
std::optional<StatePeek> PeekState(std::string_view bytes);

}  // namespace cairn::records

#endif  // CAIRN_ENGINE_SRC_RECORDS_H_
