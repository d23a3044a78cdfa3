// F1: the key codec (engine/src/key_codec.h). A key that encodes decodes to
// its canonical JSON, which encodes to the same bytes; arbitrary bytes
// given to the decoders are refused, never misread past their end.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "key_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  namespace keys = cairn::keys;
  auto encoded = keys::EncodeKey(in);
  if (encoded.ok()) {
    auto json = keys::KeyToJson(*encoded);
    if (!json.ok()) std::abort();
    auto again = keys::EncodeKey(*json);
    if (!again.ok() || *again != *encoded) std::abort();
    if (keys::KeyLength(*encoded) != encoded->size()) std::abort();
  }
  // The raw bytes as a stored key.
  (void)keys::KeyToJson(in);
  (void)keys::KeyLength(in);
  std::string_view rest = in;
  std::string out;
  if (keys::ConsumeEscaped(&rest, &out)) {
    if (rest.size() > in.size()) std::abort();
    std::string re;
    keys::AppendEscaped(out, &re);
    if (in.substr(0, re.size()) != re) std::abort();
  }
  rest = in;
  uint64_t v = 0;
  if (keys::ConsumeU64(&rest, &v) && rest.size() + 8 != in.size()) std::abort();
  return 0;
}
