// The one place cairn encodes RocksDB keys. Every integer is big-endian so
// byte order equals numeric order; strings are escaped so that a string is
// never a prefix-ambiguous part of a longer key.
//
//   escaped string:  each 0x00 byte becomes 0x00 0xFF, then 0x00 0x01 ends it
//   u64:             8 bytes big-endian
//
// Canonical entity key (the `key` part below), one tagged value:
//
//   0x10                       null (only inside a composite key)
//   0x20 / 0x21                false / true
//   0x30 <8 bytes>             integer that fits int64: big-endian with the
//                              sign bit flipped (so -1 < 0 < 1 bytewise)
//   0x31 <escaped text>        any other number, its JSON text kept exactly
//   0x40 <escaped utf-8>       string
//   0x50 (<escaped name> <value>)* 0x00 0x00
//                              composite key: fields sorted by name (bytewise)
//
// Column family keys (see README "On-disk layout"):
//
//   log         <esc source> <u64 ts> <u64 tick> <esc collection> <key>
//   state       <esc collection> <key>
//   history     <esc collection> <key> ~<u64 ts> ~<u64 tick> ~<esc source>
//   entity_seq  <esc collection> <key> ~<u64 seq>
//
// where ~ is every byte complemented: an entity's versions and entries sort
// newest first (format 5; formats 1-4 sorted them oldest first, in the
// families "history" and "entity_seq", which the upgrade rewrites), so that
// retention's compaction filter meets a record's successor before the record
// itself and needs no link to it (retention.cc).
//   changes     <u64 seq>
//   staging     <esc session id> <key>                   accrue, replace
//               <esc session id> 0x01 <u64 index>         atomic: truncates
//               <esc session id> 0x02 <entity> <u64 ts> <u64 tick>
//                   <esc source> <u64 index>              atomic: the rest
//               <esc ""> <log key>                        an atomic commit's
//                                                         log, being sorted
//
// Meta keys (RocksDB's default family; the prefixes are in config.h):
//
//   last_seq, horizon, retention     one each
//   source/<name>                    a source's counters
//   registry/<name>                  a source definition
//   session/<id>                     a session record
//   checkpoint/<name>                a named checkpoint
//   truncate/<esc collection> <u64 ts> <u64 tick> <esc source>
//                                    a truncate marker (empty value)
//
// <esc collection><key> ("entity prefix") is prefix-free: no entity prefix is
// a prefix of another, so per-entity ranges never interleave.
#ifndef CAIRN_ENGINE_SRC_KEY_CODEC_H_
#define CAIRN_ENGINE_SRC_KEY_CODEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cairn/event.h"
#include "config.h"

namespace cairn::keys {

void AppendEscaped(std::string_view s, std::string* out);
void AppendU64(uint64_t v, std::string* out);
// Reads an escaped string / u64 at *in, advancing it. False when malformed.
bool ConsumeEscaped(std::string_view* in, std::string* out);
bool ConsumeU64(std::string_view* in, uint64_t* v);

// Canonical key bytes for JSON key text. INVALID_ARGUMENT (naming the
// problem) for empty keys, nested values, non-UTF-8 text or bad JSON.
absl::StatusOr<std::string> EncodeKey(std::string_view key_json);
// Canonical JSON text (fields sorted, compact) for canonical key bytes.
absl::StatusOr<std::string> KeyToJson(std::string_view key_bytes);
// Length of the canonical key at the start of `bytes`, or 0 if malformed.
size_t KeyLength(std::string_view bytes);
// Canonical-key prefix matching string keys that start with `prefix`.
std::string StringKeyPrefix(std::string_view prefix);

// What every state/history/entity_seq key of the collection starts with.
std::string CollectionPrefix(std::string_view collection);
std::string EntityPrefix(std::string_view collection, std::string_view key_bytes);
// Length of the entity prefix at the start of a state/history/entity_seq key.
size_t EntityPrefixLength(std::string_view cf_key);

std::string LogKey(std::string_view source, Position pos, std::string_view collection,
                   std::string_view key_bytes);
std::string HistoryKey(std::string_view entity, Position pos, std::string_view source);
// What every history key of the entity at `pos` starts with (whatever the
// source): a Seek to it lands on the newest version at or before `pos`.
std::string HistoryPositionPrefix(std::string_view entity, Position pos);
// The position and source of a history key after its entity prefix; false
// when malformed.
bool ParseHistorySuffix(std::string_view suffix, Position* pos, std::string* source);
// Only the timestamp of that suffix (what retention and a late event's link
// need), without decoding the rest; false when malformed.
bool HistorySuffixTimestamp(std::string_view suffix, uint64_t* timestamp);
std::string EntitySeqKey(std::string_view entity, uint64_t seq);
bool ParseEntitySeqSuffix(std::string_view suffix, uint64_t* seq);
// A format-4 (oldest first) history or entity_seq key rewritten newest
// first; "" when malformed.
enum class NewestFirstFamily { kHistory, kEntitySeq };
std::string NewestFirstKey(NewestFirstFamily family, std::string_view ascending_key);
std::string SeqKey(uint64_t seq);

// Staging keys of a session: StagingPrefix(id) starts every one of them.
std::string StagingPrefix(std::string_view session_id);
std::string StagingKey(std::string_view session_id, std::string_view key_bytes);
// An atomic session stages its truncates first (in the order posted), then
// every other event grouped by entity in key order, each entity's in
// position order (`index`, the event's number in the session, keeps
// repeats apart and in posted order): the order its commit folds them in.
// The tags sort below every canonical key's first byte.
inline constexpr char kAtomicTruncateTag = 0x01;
inline constexpr char kAtomicEventTag = 0x02;
// Where an atomic commit parks its log entries to sort them (staging family;
// the prefix of the empty session id, which no session has).
std::string LogSortPrefix();
std::string AtomicTruncatesPrefix(std::string_view session_id);
std::string AtomicEventsPrefix(std::string_view session_id);
std::string AtomicTruncateKey(std::string_view session_id, uint64_t index);
std::string AtomicEventKey(std::string_view session_id, std::string_view entity, Position pos,
                           std::string_view source, uint64_t index);

// Meta keys. `name` is stored as given (names are checked before).
std::string SourceStatsKey(std::string_view source);
std::string RegistryKey(std::string_view source);
std::string SessionKey(std::string_view session_id);
std::string CheckpointKey(std::string_view name);
// A side record's meta key: kMetaSidePrefix, then the name's bytes as they
// are (so a prefix of names is a prefix of keys).
std::string SideRecordKey(std::string_view name);
std::string TruncateMarkerKey(std::string_view collection, Position pos, std::string_view source);
// The parts of a truncate marker key; false when it is malformed.
bool ParseTruncateMarkerKey(std::string_view key, std::string* collection, Position* pos,
                            std::string* source);
// The name in a meta key built from `prefix`. REQUIRES: key starts with it.
inline std::string_view MetaName(std::string_view key, std::string_view prefix) {
  return key.substr(prefix.size());
}

// Smallest key greater than every key starting with `prefix` ("" if none).
std::string PrefixSuccessor(std::string_view prefix);

}  // namespace cairn::keys

#endif  // CAIRN_ENGINE_SRC_KEY_CODEC_H_
