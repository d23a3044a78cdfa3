// F1: the incremental SSE decoder (cairn/formats.h SseDecoder). The stream
// is fed in chunks whose boundaries come from the input's first bytes; it
// must decode to exactly what the whole stream fed at once decodes to (or
// fail in both cases).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "cairn/formats.h"

namespace {

const cairn::SourceDefinition kBilling{
    .name = "billing", .format = "sse-feed", .default_collection = "things"};

struct Decoded {
  bool ok = true;
  std::vector<cairn::Event> events;
};

Decoded Run(std::string_view stream, const std::vector<size_t>& cuts) {
  cairn::formats::SseDecoder decoder(kBilling);
  Decoded out;
  size_t at = 0;
  for (size_t cut : cuts) {
    size_t n = std::min(cut, stream.size() - at);
    if (!decoder.Feed(stream.substr(at, n), &out.events).ok()) {
      out.ok = false;
      return out;
    }
    at += n;
  }
  if (!decoder.Feed(stream.substr(at), &out.events).ok() || !decoder.Finish(&out.events).ok()) {
    out.ok = false;
  }
  return out;
}

bool Same(const cairn::Event& a, const cairn::Event& b) {
  return a.source == b.source && a.collection == b.collection && a.key == b.key &&
         a.position == b.position && a.op == b.op && a.payload == b.payload &&
         a.snapshot == b.snapshot && a.event_id == b.event_id && a.raw == b.raw;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // First byte: how many cut lengths follow (up to 15), one byte each.
  if (size == 0) return 0;
  size_t ncuts = data[0] & 15;
  if (size < 1 + ncuts) return 0;
  std::vector<size_t> cuts(data + 1, data + 1 + ncuts);
  std::string_view stream(reinterpret_cast<const char*>(data + 1 + ncuts), size - 1 - ncuts);
  Decoded whole = Run(stream, {});
  Decoded chunked = Run(stream, cuts);
  if (whole.ok != chunked.ok) std::abort();
  if (!whole.ok) return 0;
  if (whole.events.size() != chunked.events.size()) std::abort();
  for (size_t i = 0; i < whole.events.size(); ++i) {
    if (!Same(whole.events[i], chunked.events[i])) std::abort();
  }
  return 0;
}
