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
//   history     <esc collection> <key> <u64 ts> <u64 tick> <esc source>
//   entity_seq  <esc collection> <key> <u64 seq>
//   changes     <u64 seq>
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

std::string EntityPrefix(std::string_view collection, std::string_view key_bytes);
// Length of the entity prefix at the start of a state/history/entity_seq key.
size_t EntityPrefixLength(std::string_view cf_key);

std::string LogKey(std::string_view source, Position pos, std::string_view collection,
                   std::string_view key_bytes);
std::string HistoryKey(std::string_view entity, Position pos, std::string_view source);
std::string EntitySeqKey(std::string_view entity, uint64_t seq);
std::string SeqKey(uint64_t seq);

// Smallest key greater than every key starting with `prefix` ("" if none).
std::string PrefixSuccessor(std::string_view prefix);

}  // namespace cairn::keys

#endif  // CAIRN_ENGINE_SRC_KEY_CODEC_H_
