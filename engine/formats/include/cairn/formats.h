// Input formats (DESIGN §6): decoders that turn what producers send into
// cairn events. One decoder per format, behind one entry point; every decoder
// parses JSON with RapidJSON through cairn's number-exact document layer.
//
// Contract shared by every format:
//  * A payload decodes completely or not at all. The first bad record (for
//    bitbroker: every bad record) is reported as INVALID_ARGUMENT
//    "record N: <field>: <reason>" (N counts records from 0; line formats add
//    the 1-based line), and no event of the payload is returned.
//  * Events carry source = the source's name and raw = the bytes of their own
//    record, so the log can be re-decoded and audited.
//  * Keys: a message key (Kafka envelope) wins; otherwise the format's key
//    (GoldenGate primary_keys, Aria header key) or the source's configured
//    key_fields for the collection, read from the after (or, for deletes,
//    the before) image. A key of one field is that field's value (`101`), a
//    key of several is an object (`{"FISCAL_CODE":"X","USER_ID":123}`), so the
//    same row gets the same key whichever format or envelope carried it.
//  * Collections: the source's collection_map translates the producer's name
//    (Debezium `source.table` or `schema.table`, GoldenGate `table`, Aria
//    `entity`); an unmapped name is used as is; formats that carry no name use
//    the source's default_collection.
//  * Timestamps become microseconds since the epoch. Text timestamps are
//    ISO-8601 (`2020-05-13 15:40:06.000000`, `2026-11-20T10:00:00.000Z`,
//    offsets `+02:00`; no zone means UTC). Numeric timestamps are read in the
//    unit the format documents (see README "Input formats").
//
// Thread safety: Decode() is a pure function; an SseDecoder is used by one
// thread at a time.
#ifndef CAIRN_FORMATS_H_
#define CAIRN_FORMATS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cairn/event.h"
#include "cairn/source.h"

namespace cairn::formats {

// The registered format names.
inline constexpr const char* kFormatNames[] = {"debezium",   "goldengate", "infosphere", "sse-feed",
                                               "datapoints", "bitbroker",  "canonical"};

struct DecodeOptions {
  // The collection records go to when the format names none; overrides the
  // source's default_collection. Sessions pass theirs (bitbroker records are
  // validated against that collection's JSON Schema).
  std::string collection;
  // The collection every record goes to, whatever it names (a nats
  // connector's subject map); empty: the format decides.
  std::string force_collection;
  // canonical only: each record names its own source (`source`, required)
  // instead of taking `source.name` (cairnd's POST /v1/ingest without
  // ?source=, like gRPC's IngestEvents).
  bool source_per_record = false;
};

// Decodes one whole payload in `source.format`. INVALID_ARGUMENT for unknown
// formats and bad records (see above).
absl::StatusOr<std::vector<Event>> Decode(const SourceDefinition& source, std::string_view payload,
                                          const DecodeOptions& options = {});

// Checks what Decode will need of a source before it is registered: each
// JSON Schema parses within the nesting bound, valijson can use it, and its
// references never loop back without descending into the instance (such a
// schema would recurse without end while validating). INVALID_ARGUMENT
// naming the collection. cairnd calls it on PutSource; Decode checks a
// schema again before using it.
absl::Status CheckSource(const SourceDefinition& source);

// Checks `instance` (any JSON text) against `schema` (a JSON Schema text)
// the way a bitbroker source checks a record's `entity`: the schema passes
// CheckSource's checks first. OK when it conforms; INVALID_ARGUMENT listing
// what does not conform (or why the instance or the schema is unusable).
// The JSON Schema conformance test runs the official suite through it.
absl::Status ValidateJsonSchema(std::string_view schema, std::string_view instance);

// True for formats whose records carry no position: cairn assigns one when a
// contribution session commits, so they are posted through sessions, not
// ingested directly.
bool SessionOnly(std::string_view format);

// Aria-style Server-Sent Events, decoded incrementally: feed the stream in
// chunks of any size (a chunk may end inside a line, or between the CR and LF
// of a CRLF); each event is returned once its terminating blank line arrives.
// Per the SSE spec: lines end with CRLF, LF or CR; lines starting with ':' are
// comments; one space after "field:" is dropped; `id` and `retry` are
// accepted (id is kept as the event id); an event without data is ignored.
class SseDecoder {
 public:
  explicit SseDecoder(SourceDefinition source, DecodeOptions options = {});
  ~SseDecoder();
  SseDecoder(const SseDecoder&) = delete;
  SseDecoder& operator=(const SseDecoder&) = delete;

  // Appends the events completed by `chunk` to *out. After an error the
  // decoder keeps returning it.
  absl::Status Feed(std::string_view chunk, std::vector<Event>* out);
  // End of input: an event still waiting for its blank line is dispatched
  // (a file need not end with one).
  absl::Status Finish(std::vector<Event>* out);
  // The reconnection time the stream asked for in its last valid `retry:`
  // field, in milliseconds; none before one.
  std::optional<uint64_t> retry_millis() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cairn::formats

#endif  // CAIRN_FORMATS_H_
