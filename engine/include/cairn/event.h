// The canonical event and the records cairn returns (DESIGN §1, §3, §4).
// Plain value types: copyable, no hidden sharing, safe to move across threads.
#ifndef CAIRN_EVENT_H_
#define CAIRN_EVENT_H_

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace cairn {

// Where an event sits in its source's order. Compared as (timestamp, tick).
// UINT64_MAX is reserved in both fields (it bounds range scans); events using
// it are rejected with INVALID_ARGUMENT ("position overflow").
struct Position {
  uint64_t timestamp = 0;  // microseconds since the Unix epoch
  uint64_t tick = 0;       // tie breaker: Aria tick, Kafka offset, LSN, ...
  auto operator<=>(const Position&) const = default;
};

enum class Op : uint8_t {
  kUpsert = 1,    // payload is the whole document
  kPatch = 2,     // payload is an RFC 7396 JSON Merge Patch
  kDelete = 3,    // payload ignored
  kTruncate = 4,  // deletes every entity of the collection; key must be empty
};
const char* OpName(Op op);

// One decoded change event. `key` and `payload` are JSON text:
//  * key: a scalar (`101`, `"ACC-1"`) or an object of scalars for composite
//    keys (`{"USER_ID":123,"FISCAL_CODE":"X"}`). The store canonicalizes it:
//    field order and whitespace do not matter; integers that fit in 64 bits
//    and any other number text are kept exactly.
//  * payload: a JSON object for kUpsert and kPatch; ignored otherwise.
// Identity (for idempotence) is (source, position, collection, key).
struct Event {
  std::string source;
  std::string collection;
  std::string key;
  Position position;
  Op op = Op::kUpsert;
  std::string payload;
  bool snapshot = false;  // a load/snapshot upsert (Debezium `r`, Aria load)
  std::string event_id;   // the producer's id, optional, kept for audit
  std::string raw;        // the bytes the source sent, kept in the log
};

enum class Outcome : uint8_t {
  kApplied = 0,    // new event, appended and folded
  kDuplicate = 1,  // identical event already in the log; nothing changed
  kConflict = 2,   // same identity, different content; the first write stays
};
const char* OutcomeName(Outcome outcome);

// Result of one ingest batch. `outcomes[i]` belongs to events[i].
struct IngestResult {
  uint64_t first_seq = 0;  // seq range of the changes this batch produced;
  uint64_t last_seq = 0;   // both 0 when it produced none
  uint64_t applied = 0;
  uint64_t duplicates = 0;
  uint64_t conflicts = 0;
  std::vector<Outcome> outcomes;
};

// Current (or point-in-time) state of one entity.
struct Entity {
  std::string collection;
  std::string key;       // canonical JSON of the key (fields sorted, compact)
  std::string document;  // compact JSON object
  bool complete = true;  // false while the fold holds only patches
  Position position;     // position of the newest folded version
  std::string source;    // source of the newest folded version
  uint64_t seq = 0;      // seq of the change that produced this state
};

// One version in an entity's history (DESIGN §3). `before`/`after` are empty
// strings when the entity did not exist (before) or was deleted (after).
struct Version {
  Op op = Op::kUpsert;
  Position position;
  std::string source;
  uint64_t seq = 0;
  bool snapshot = false;
  bool complete = true;
  std::string before;
  std::string after;
};

// One record of the change feed: a commit that changed an entity's state.
struct Change {
  uint64_t seq = 0;
  std::string collection;
  std::string key;  // canonical JSON
  Op op = Op::kUpsert;
  std::string before;  // empty: did not exist
  std::string after;   // empty: deleted
  Position position;
  std::string source;
  bool complete = true;
};

// What a subscription delivers, in this order for Start::kSnapshot:
// kSnapshotEntity*, kSnapshotEnd (seq = N), then kChange with seq > N; a
// kCaughtUp marker each time the stream reaches the last committed seq after
// having been behind (always once, first time it is caught up).
struct SubscriptionItem {
  enum class Kind { kSnapshotEntity, kSnapshotEnd, kChange, kCaughtUp };
  Kind kind = Kind::kChange;
  Entity entity;     // kSnapshotEntity
  Change change;     // kChange
  uint64_t seq = 0;  // kSnapshotEnd: N; kCaughtUp: last committed seq
};

// --- Input bounds shared by the engine, cairnd and the client (DESIGN §7).

// RFC 3629 UTF-8: shortest forms only, no UTF-16 surrogates, nothing past
// U+10FFFF (names and keys end up in protobuf strings).
bool IsValidUtf8(std::string_view s);

// Names of sources, collections, checkpoints and sessions: 1 to kMaxNameBytes
// bytes of valid UTF-8 without NUL or other control characters (U+0000 to
// U+001F, U+007F).
inline constexpr size_t kMaxNameBytes = 256;
// INVALID_ARGUMENT "<what> ..." naming the bound the name breaks.
absl::Status CheckName(std::string_view what, std::string_view name);

// At most kMaxEchoBytes of `value` (cut at a character boundary, "…"
// appended when cut): what error messages quote of an input, so a message
// never echoes a whole hostile input.
inline constexpr size_t kMaxEchoBytes = 200;
std::string Excerpt(std::string_view value, size_t max_bytes = kMaxEchoBytes);

}  // namespace cairn

#endif  // CAIRN_EVENT_H_
