// JSON documents for cairn, on RapidJSON.
//
// Numbers keep the text the source sent (DESIGN §3: no float rounding, exact
// 64-bit integers). RapidJSON's DOM has no "raw number" type, so Parse() reads
// numbers as text (kParseNumbersAsStringsFlag) and stores each as a string
// value prefixed with byte 0xFF, which never occurs in a valid UTF-8 string;
// Serialize() writes such values back as raw number text. Everything else is
// plain RapidJSON.
#ifndef CAIRN_ENGINE_SRC_JSON_DOC_H_
#define CAIRN_ENGINE_SRC_JSON_DOC_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "rapidjson/document.h"

namespace cairn::json {

using Document = rapidjson::Document;
using Value = rapidjson::Value;

inline constexpr char kNumberMark = '\xFF';

// Nesting bounds (DESIGN §7 Limits). Every JSON text cairn reads goes
// through Parse, which refuses deeper nesting before any recursive code
// (canonicalization, merge patch, schema validation, serialization) sees
// the value, and parses iteratively itself: a hostile document cannot
// overflow the stack.
#ifndef CAIRN_NESTING_UNBOUNDED
inline constexpr int kMaxDocumentDepth = 512;  // documents, patches, payloads
inline constexpr int kMaxKeyDepth = 64;        // keys (scalars or flat objects)
#else  // only in `make fuzz-unbounded`, which shows the fuzzers find the bound's absence
inline constexpr int kMaxDocumentDepth = 1 << 30;
inline constexpr int kMaxKeyDepth = 1 << 30;
#endif

// Parses `text` (validating UTF-8). INVALID_ARGUMENT with the offset and
// RapidJSON's reason on error, or naming the bound when arrays and objects
// nest deeper than `max_depth` levels.
absl::StatusOr<Document> Parse(std::string_view text, int max_depth = kMaxDocumentDepth);
// Compact serialization; numbers written as their original text.
std::string Serialize(const Value& v);

bool IsNumber(const Value& v);
// The original number text. REQUIRES: IsNumber(v).
std::string_view NumberText(const Value& v);

// RFC 7396: applies `patch` to `target` in place (target becomes the patch
// itself when the patch is not an object).
void MergePatch(Value& target, const Value& patch, Document::AllocatorType& alloc);

// Parses, applies and serializes: the materializer's one-call form.
// `doc` empty means "no document" (treated as {} for the patch).
absl::StatusOr<std::string> ApplyMergePatch(std::string_view doc, std::string_view patch);
// Parses and re-serializes compactly: the stored form of a payload.
// INVALID_ARGUMENT unless the text is a JSON object.
absl::StatusOr<std::string> CanonicalObject(std::string_view text);

}  // namespace cairn::json

#endif  // CAIRN_ENGINE_SRC_JSON_DOC_H_
