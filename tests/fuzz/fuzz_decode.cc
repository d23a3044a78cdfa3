// F1: every input format's decoder (cairn/formats.h Decode). The first byte
// picks the format (kFormatNames, modulo their number); the rest is the
// payload. Besides not crashing, a payload decodes completely or not at all:
// on success every event names the source, and its raw bytes are its record:
// a part of the payload for the formats of one record a line (SSE: its
// lines, with LF endings), and the record as compact JSON for bitbroker and
// datapoints, whose payload is one document of many records.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <string_view>

#include "cairn/formats.h"
#include "rapidjson/document.h"

namespace {

using cairn::SourceDefinition;
using cairn::formats::kFormatNames;

SourceDefinition SourceFor(size_t format) {
  SourceDefinition s;
  s.name = "fuzz";
  s.format = kFormatNames[format];
  s.default_collection = "things";
  s.key_fields = {{"products", {"id"}}, {"customers", {"id"}}, {"things", {"id"}}};
  s.collection_map = {{"OGG.TBL_TEST", "products"}};
  if (s.format == "bitbroker") {
    s.json_schemas = {{"things", R"({"type":"object","properties":{"id":{"type":"integer"},)"
                                 R"("name":{"type":"string","maxLength":40}},"required":["id"]})"}};
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  constexpr size_t kFormats = std::size(kFormatNames);
  static const SourceDefinition* sources = [] {
    auto* out = new SourceDefinition[kFormats];
    for (size_t i = 0; i < kFormats; ++i) out[i] = SourceFor(i);
    return out;
  }();
  const SourceDefinition& source = sources[data[0] % kFormats];
  std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  cairn::formats::DecodeOptions options;
  if (source.format == "bitbroker") options.collection = "things";
  auto events = cairn::formats::Decode(source, payload, options);
  if (!events.ok()) {
    if (events.status().message().empty()) std::abort();  // every error names its cause
    return 0;
  }
  for (const cairn::Event& e : *events) {
    if (e.source != source.name) std::abort();
    if (source.format == "bitbroker" || source.format == "datapoints") {
      rapidjson::Document record;
      record.Parse(e.raw.data(), e.raw.size());
      if (record.HasParseError()) std::abort();
      continue;
    }
    // (An SSE event's raw is its lines, each ended by LF whatever ended it.)
    if (source.format != "sse-feed" && !e.raw.empty() &&
        payload.find(e.raw) == std::string_view::npos) {
      std::abort();
    }
  }
  return 0;
}
