// The one entry point: dispatch by format name.
#include "cairn/formats.h"

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {

absl::StatusOr<std::vector<Event>> Decode(const SourceDefinition& source,
                                          std::string_view payload,
                                          const DecodeOptions& options) {
  Context ctx{source, options};
  const std::string& f = source.format;
  if (f == "debezium") return DecodeLines(ctx, payload, DecodeDebeziumRecord);
  if (f == "goldengate")
    return DecodeLines(ctx, payload, DecodeGoldenGateRecord);
  if (f == "infosphere")
    return DecodeLines(ctx, payload, DecodeInfoSphereRecord);
  if (f == "canonical") return DecodeLines(ctx, payload, DecodeCanonicalRecord);
  if (f == "datapoints") return DecodeDatapoints(ctx, payload);
  if (f == "bitbroker") return DecodeBitBroker(ctx, payload);
  if (f == "sse-feed") {
    SseDecoder decoder(source, options);
    std::vector<Event> out;
    CAIRN_RETURN_IF_ERROR(decoder.Feed(payload, &out));
    CAIRN_RETURN_IF_ERROR(decoder.Finish(&out));
    return out;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("source '", source.name, "': unknown format '", f, "'"));
}

bool SessionOnly(std::string_view format) { return format == "bitbroker"; }

}  // namespace cairn::formats
