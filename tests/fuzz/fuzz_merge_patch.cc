// F1: RFC 7396 merge patch (engine/src/json_doc.h ApplyMergePatch). The
// input is a document and a patch separated by the first NUL byte. A patch
// that applies gives a JSON text, and applying it again changes nothing
// (merge patches are idempotent).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "json_doc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nul = in.find('\0');
  if (nul == std::string_view::npos) return 0;
  std::string_view doc = in.substr(0, nul), patch = in.substr(nul + 1);
  auto once = cairn::json::ApplyMergePatch(doc, patch);
  if (!once.ok()) return 0;
  if (!cairn::json::Parse(*once).ok()) std::abort();
  auto twice = cairn::json::ApplyMergePatch(*once, patch);
  if (!twice.ok() || *twice != *once) std::abort();
  return 0;
}
