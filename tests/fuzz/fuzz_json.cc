// F1: the JSON document layer (engine/src/json_doc.h). What parses
// serializes to a text that parses again to the same text (number text
// kept), and stays within the nesting bound however deep the input nests.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "json_doc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto doc = cairn::json::Parse(in);
  if (doc.ok()) {
    std::string once = cairn::json::Serialize(*doc);
    auto again = cairn::json::Parse(once);
    if (!again.ok() || cairn::json::Serialize(*again) != once) std::abort();
  }
  auto object = cairn::json::CanonicalObject(in);
  if (object.ok()) {
    auto again = cairn::json::CanonicalObject(*object);
    if (!again.ok() || *again != *object) std::abort();
  }
  return 0;
}
