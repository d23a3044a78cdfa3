#include "json_doc.h"

#include <cstring>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "rapidjson/error/en.h"
#include "rapidjson/reader.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::json {
namespace {

// Iterative: RapidJSON's recursive parser uses stack per nesting level.
constexpr unsigned kParseFlags = rapidjson::kParseNumbersAsStringsFlag |
                                 rapidjson::kParseValidateEncodingFlag |
                                 rapidjson::kParseStopWhenDoneFlag | rapidjson::kParseIterativeFlag;

// Whether `s` holds a UTF-16 surrogate encoded as UTF-8 (ED A0..BF xx):
// RapidJSON decodes a lone low-surrogate escape ("\uDC00"-"\uDFFF") into
// those bytes, which are not Unicode text (RFC 3629) and which protobuf
// refuses in a string. (It refuses a lone high surrogate itself.)
bool HasSurrogate(const char* s, size_t n) {
  const char* end = s + n;
  for (const char* p = s; (p = static_cast<const char*>(std::memchr(p, '\xED', end - p)));) {
    if (++p < end && static_cast<unsigned char>(*p) >= 0xA0) return true;
  }
  return false;
}

// Forwards SAX events into a Document, turning raw number text into marked
// strings (see the header), and stops the parse past `max_depth` levels.
class MarkingHandler {
 public:
  MarkingHandler(Document& doc, int max_depth) : doc_(doc), max_depth_(max_depth) {}
  bool too_deep() const { return too_deep_; }
  bool surrogate() const { return surrogate_; }
  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned i) { return doc_.Uint(i); }
  bool Int64(int64_t i) { return doc_.Int64(i); }
  bool Uint64(uint64_t i) { return doc_.Uint64(i); }
  bool Double(double d) { return doc_.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool) {
    scratch_.assign(1, kNumberMark);
    scratch_.append(s, n);
    return doc_.String(scratch_.data(), static_cast<rapidjson::SizeType>(scratch_.size()), true);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) {
    return Unicode(s, n) && doc_.String(s, n, copy);
  }
  bool StartObject() { return Enter() && doc_.StartObject(); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) {
    return Unicode(s, n) && doc_.Key(s, n, copy);
  }
  bool EndObject(rapidjson::SizeType n) {
    --depth_;
    return doc_.EndObject(n);
  }
  bool StartArray() { return Enter() && doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return doc_.EndArray(n);
  }

 private:
  bool Enter() {
    if (++depth_ <= max_depth_) return true;
    too_deep_ = true;
    return false;
  }
  bool Unicode(const char* s, rapidjson::SizeType n) {
    if (!HasSurrogate(s, n)) return true;
    surrogate_ = true;
    return false;
  }

  Document& doc_;
  const int max_depth_;
  int depth_ = 0;
  bool too_deep_ = false;
  bool surrogate_ = false;
  std::string scratch_;
};

// Writes marked strings back as raw numbers.
class UnmarkingWriter {
 public:
  explicit UnmarkingWriter(rapidjson::Writer<rapidjson::StringBuffer>& w) : w_(w) {}
  bool Null() { return w_.Null(); }
  bool Bool(bool b) { return w_.Bool(b); }
  bool Int(int i) { return w_.Int(i); }
  bool Uint(unsigned i) { return w_.Uint(i); }
  bool Int64(int64_t i) { return w_.Int64(i); }
  bool Uint64(uint64_t i) { return w_.Uint64(i); }
  bool Double(double d) { return w_.Double(d); }
  bool String(const char* s, rapidjson::SizeType n, bool copy = false) {
    if (n > 0 && s[0] == kNumberMark) {
      return w_.RawValue(s + 1, n - 1, rapidjson::kNumberType);
    }
    return w_.String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy = false) { return w_.Key(s, n, copy); }
  bool StartObject() { return w_.StartObject(); }
  bool EndObject(rapidjson::SizeType n = 0) { return w_.EndObject(n); }
  bool StartArray() { return w_.StartArray(); }
  bool EndArray(rapidjson::SizeType n = 0) { return w_.EndArray(n); }

 private:
  rapidjson::Writer<rapidjson::StringBuffer>& w_;
};

// Checks a text as Parse does (encoding, nesting) without building a
// document, and notes whether its value is an object.
class CheckingHandler {
 public:
  explicit CheckingHandler(int max_depth) : max_depth_(max_depth) {}
  bool root_is_object() const { return root_is_object_; }
  bool Null() { return Value(); }
  bool Bool(bool) { return Value(); }
  bool Int(int) { return Value(); }
  bool Uint(unsigned) { return Value(); }
  bool Int64(int64_t) { return Value(); }
  bool Uint64(uint64_t) { return Value(); }
  bool Double(double) { return Value(); }
  bool RawNumber(const char*, rapidjson::SizeType, bool) { return Value(); }
  bool String(const char* s, rapidjson::SizeType n, bool) { return !HasSurrogate(s, n) && Value(); }
  bool Key(const char* s, rapidjson::SizeType n, bool) { return !HasSurrogate(s, n); }
  bool StartObject() {
    if (!seen_value_) root_is_object_ = true;
    return Enter();
  }
  bool EndObject(rapidjson::SizeType) {
    --depth_;
    return true;
  }
  bool StartArray() { return Enter(); }
  bool EndArray(rapidjson::SizeType) {
    --depth_;
    return true;
  }

 private:
  bool Value() {
    seen_value_ = true;
    return true;
  }
  bool Enter() {
    seen_value_ = true;
    return ++depth_ <= max_depth_;
  }
  const int max_depth_;
  int depth_ = 0;
  bool seen_value_ = false;
  bool root_is_object_ = false;
};

// True when `text` has no whitespace outside strings and no backslash: then
// the compact serialization of its value is the text itself (the writer
// escapes only quotes, backslashes and control characters, which such a
// text's strings cannot hold unescaped, and numbers keep their text).
bool IsCompactWithoutEscapes(std::string_view text) {
  bool in_string = false;
  for (char c : text) {
    if (c == '\\') return false;
    if (c == '"') {
      in_string = !in_string;
    } else if (!in_string && (c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<Document> Parse(std::string_view text, int max_depth) {
  Document doc;
  rapidjson::MemoryStream ms(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(ms);
  rapidjson::Reader reader;
  rapidjson::ParseResult result;
  bool too_deep = false, surrogate = false;
  auto generate = [&](Document& d) {
    MarkingHandler handler(d, max_depth);
    result = reader.Parse<kParseFlags>(in, handler);
    too_deep = handler.too_deep();
    surrogate = handler.surrogate();
    return !result.IsError();
  };
  doc.Populate(generate);
  if (surrogate) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at offset ", result.Offset(),
                     ": a \\u escape of a lone UTF-16 surrogate (not Unicode text)"));
  }
  if (too_deep) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON at offset ", result.Offset(),
                                                   ": arrays and objects nest deeper than ",
                                                   max_depth, " levels"));
  }
  if (result.IsError()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON at offset ", result.Offset(), ": ",
                                                   rapidjson::GetParseError_En(result.Code())));
  }
  // kParseStopWhenDoneFlag stops after one value; anything but whitespace
  // after it is an error.
  for (size_t i = in.Tell(); i < text.size(); ++i) {
    char c = text[i];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid JSON at offset ", i, ": unexpected text after the value"));
    }
  }
  return doc;
}

std::string Serialize(const Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  UnmarkingWriter u(w);
  v.Accept(u);
  return std::string(buf.GetString(), buf.GetSize());
}

bool IsNumber(const Value& v) {
  return v.IsNumber() ||
         (v.IsString() && v.GetStringLength() > 0 && v.GetString()[0] == kNumberMark);
}

std::string_view NumberText(const Value& v) {
  return std::string_view(v.GetString() + 1, v.GetStringLength() - 1);
}

namespace {

std::string_view NameOf(const Value& name) {
  return std::string_view(name.GetString(), name.GetStringLength());
}

// For each member of `object`, whether a later member has the same name.
// Quadratic for small objects, hashed for large ones (a hostile patch may
// have many members).
std::vector<bool> RepeatedLater(const Value& object) {
  const size_t n = object.MemberCount();
  std::vector<bool> out(n, false);
  auto member = [&](size_t i) -> const Value& { return (object.MemberBegin() + i)->name; };
  if (n <= 16) {
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = i + 1; j < n && !out[i]; ++j) out[i] = member(i) == member(j);
    }
    return out;
  }
  absl::flat_hash_set<std::string_view> later;
  for (size_t i = n; i-- > 0;) out[i] = !later.insert(NameOf(member(i))).second;
  return out;
}

}  // namespace

void MergePatch(Value& target, const Value& patch, Document::AllocatorType& alloc) {
  if (!patch.IsObject()) {
    target.CopyFrom(patch, alloc);
    return;
  }
  if (!target.IsObject()) target.SetObject();
  // A patch that repeats a name applies its last occurrence (what most JSON
  // readers keep), so applying it twice changes nothing more.
  std::vector<bool> skip = RepeatedLater(patch);
  size_t index = 0;
  for (auto m = patch.MemberBegin(); m != patch.MemberEnd(); ++m) {
    if (skip[index++]) continue;
    auto existing = target.FindMember(m->name);
    if (m->value.IsNull()) {
      // Removes the member, every copy of it where a document repeats a
      // name (so the patch stays idempotent). EraseMember keeps member
      // order (RemoveMember would swap in the last).
      while (existing != target.MemberEnd()) {
        target.EraseMember(existing);
        existing = target.FindMember(m->name);
      }
      continue;
    }
    if (existing != target.MemberEnd()) {
      MergePatch(existing->value, m->value, alloc);
    } else {
      Value v;
      MergePatch(v, m->value, alloc);
      target.AddMember(Value(m->name, alloc), v, alloc);
    }
  }
}

absl::StatusOr<std::string> ApplyMergePatch(std::string_view doc, std::string_view patch) {
  Document target;
  if (!doc.empty()) {
    auto parsed = Parse(doc);
    if (!parsed.ok()) return parsed.status();
    target = std::move(*parsed);
  } else {
    target.SetObject();
  }
  auto p = Parse(patch);
  if (!p.ok()) return p.status();
  MergePatch(target, *p, target.GetAllocator());
  return Serialize(target);
}

absl::StatusOr<std::string> CanonicalObject(std::string_view text) {
  // Most payloads arrive compact (every CDC tool and the client send them
  // so): check them without building a document, and keep their text.
  if (IsCompactWithoutEscapes(text)) {
    rapidjson::MemoryStream ms(text.data(), text.size());
    rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> in(ms);
    rapidjson::Reader reader;
    CheckingHandler handler(kMaxDocumentDepth);
    rapidjson::ParseResult result = reader.Parse<kParseFlags>(in, handler);
    if (!result.IsError() && in.Tell() == text.size() && handler.root_is_object()) {
      return std::string(text);
    }
    // Otherwise the full parse below names what is wrong.
  }
  auto doc = Parse(text);
  if (!doc.ok()) return doc.status();
  if (!doc->IsObject()) {
    return absl::InvalidArgumentError("must be a JSON object");
  }
  return Serialize(*doc);
}

}  // namespace cairn::json
