// Helpers shared by the decoders: record errors, JSON member access that
// understands cairn's number-as-text values, timestamps, keys, collections.
#ifndef CAIRN_ENGINE_FORMATS_SRC_COMMON_H_
#define CAIRN_ENGINE_FORMATS_SRC_COMMON_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cairn/event.h"
#include "cairn/formats.h"
#include "cairn/source.h"
#include "json_doc.h"

namespace cairn::formats {

using json::Value;

// What a decoder needs besides the payload.
struct Context {
  const SourceDefinition& source;
  const DecodeOptions& options;
};

// An error about one field of the record being decoded. Decoders build these
// and the caller prefixes "record N: " (see RecordError).
absl::Status FieldError(std::string_view field, absl::string_view reason);
// INVALID_ARGUMENT "record N: <message of s>" (with "line L: " for line
// formats when line > 0).
absl::Status RecordError(size_t index, size_t line, const absl::Status& s);

// JSON value kinds, with numbers kept as text by json::Parse.
bool IsText(const Value& v);  // a JSON string (not a number)
std::string_view Text(const Value& v);
// The member `name` of object `obj`, or nullptr when absent or JSON null.
const Value* Member(const Value& obj, const char* name);

// Unsigned integer from a JSON number or a string of digits (leading zeros
// allowed, as in GoldenGate's `pos`). `field` names it in errors.
absl::StatusOr<uint64_t> ReadU64(const Value& v, std::string_view field);

enum class EpochUnit { kSeconds, kMillis, kMicros };
// A timestamp in µs since the epoch: ISO-8601 text, or an integer (number or
// digit string) in `unit`.
absl::StatusOr<uint64_t> ReadTimestamp(const Value& v, EpochUnit unit, std::string_view field);
absl::StatusOr<uint64_t> ParseIsoTimestamp(std::string_view text);

// Key JSON text for a message key: scalars as they are, objects of one field
// unwrapped to the field's value, Debezium's {schema, payload} wrapper removed.
absl::StatusOr<std::string> KeyFromMessageKey(const Value& key, std::string_view field);
// Key JSON text from `fields` of a row image (`image_name` names it in errors).
absl::StatusOr<std::string> KeyFromFields(const Value& image, std::string_view image_name,
                                          const std::vector<std::string>& fields);
// The configured key fields of `collection`, or nullptr.
const std::vector<std::string>* ConfiguredKeyFields(const Context& ctx,
                                                    const std::string& collection);

// The collection for a producer-side name (empty: none given): the source's
// collection_map entry, else the name itself, else the session's or the
// source's default collection. INVALID_ARGUMENT naming `field` when there is
// none.
absl::StatusOr<std::string> ResolveCollection(const Context& ctx, std::string_view name,
                                              std::string_view field);

// Parses one JSON object (a record). Errors name no record: callers wrap them.
absl::StatusOr<json::Document> ParseObject(std::string_view text);

// Line formats: one record per non-blank line, decoded by a RecordDecoder
// that appends its events (none for a Kafka tombstone) or returns a field
// error; DecodeLines numbers the records and lines.
using RecordDecoder = absl::Status (*)(const Context& ctx, std::string_view record,
                                       std::vector<Event>* out);
absl::StatusOr<std::vector<Event>> DecodeLines(const Context& ctx, std::string_view payload,
                                               RecordDecoder decode);
absl::Status DecodeDebeziumRecord(const Context& ctx, std::string_view record,
                                  std::vector<Event>* out);
absl::Status DecodeGoldenGateRecord(const Context& ctx, std::string_view record,
                                    std::vector<Event>* out);
absl::Status DecodeInfoSphereRecord(const Context& ctx, std::string_view record,
                                    std::vector<Event>* out);
absl::Status DecodeCanonicalRecord(const Context& ctx, std::string_view record,
                                   std::vector<Event>* out);

// INVALID_ARGUMENT unless `text` is a JSON Schema object whose references
// all make progress (json_schema.cc).
absl::Status CheckJsonSchema(std::string_view text);

// Whole-document formats.
absl::StatusOr<std::vector<Event>> DecodeDatapoints(const Context& ctx, std::string_view payload);
absl::StatusOr<std::vector<Event>> DecodeBitBroker(const Context& ctx, std::string_view payload);

}  // namespace cairn::formats

#endif  // CAIRN_ENGINE_FORMATS_SRC_COMMON_H_
