// The one entry point: dispatch by format name.
#include "cairn/formats.h"

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {

namespace {

// The 1-based number of the first line that is not blank, a comment or an
// `id:`/`retry:` field -- what an SSE stream without events may hold -- or 0.
size_t FirstNonSseLine(std::string_view payload) {
  size_t n = 0;
  while (!payload.empty()) {
    ++n;
    size_t end = payload.find_first_of("\r\n");
    std::string_view line = payload.substr(0, end);
    bool crlf = end != std::string_view::npos && payload[end] == '\r' && end + 1 < payload.size() &&
                payload[end + 1] == '\n';
    payload.remove_prefix(end == std::string_view::npos ? payload.size() : end + 1 + crlf);
    if (line.find_first_not_of(" \t") == std::string_view::npos || line[0] == ':' ||
        line.substr(0, 3) == "id:" || line == "id" || line.substr(0, 6) == "retry:") {
      continue;
    }
    return n;
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::vector<Event>> Decode(const SourceDefinition& source, std::string_view payload,
                                          const DecodeOptions& options) {
  Context ctx{source, options};
  const std::string& f = source.format;
  if (f == "debezium") return DecodeLines(ctx, payload, DecodeDebeziumRecord);
  if (f == "goldengate") return DecodeLines(ctx, payload, DecodeGoldenGateRecord);
  if (f == "infosphere") return DecodeLines(ctx, payload, DecodeInfoSphereRecord);
  if (f == "canonical") return DecodeLines(ctx, payload, DecodeCanonicalRecord);
  if (f == "datapoints") return DecodeDatapoints(ctx, payload);
  if (f == "bitbroker") return DecodeBitBroker(ctx, payload);
  if (f == "sse-feed") {
    SseDecoder decoder(source, options);
    std::vector<Event> out;
    CAIRN_RETURN_IF_ERROR(decoder.Feed(payload, &out));
    CAIRN_RETURN_IF_ERROR(decoder.Finish(&out));
    // SSE ignores lines it does not know, so binary or another format's
    // records would decode to nothing at all: that is an error, not an
    // empty batch.
    if (out.empty()) {
      if (size_t line = FirstNonSseLine(payload)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "record 0: line ", line,
            ": no SSE event found: an event is an 'event: <type>' line and 'data:' lines "
            "ended by a blank line (is this source's format right?)"));
      }
    }
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("source '", source.name, "': unknown format '", f, "'"));
}

bool SessionOnly(std::string_view format) { return format == "bitbroker"; }

}  // namespace cairn::formats
