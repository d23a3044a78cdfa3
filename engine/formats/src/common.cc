#include "common.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cairn/status.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::formats {

absl::Status FieldError(std::string_view field, absl::string_view reason) {
  return absl::InvalidArgumentError(absl::StrCat(AbslView(field), ": ", reason));
}

absl::Status RecordError(size_t index, size_t line, const absl::Status& s) {
  if (line > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("record ", index, ": line ", line, ": ", s.message()));
  }
  return absl::InvalidArgumentError(absl::StrCat("record ", index, ": ", s.message()));
}

bool IsText(const Value& v) { return v.IsString() && !json::IsNumber(v); }

std::string_view Text(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

const Value* Member(const Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return nullptr;
  return &it->value;
}

namespace {

// Digits only, no sign, no fraction: the integer forms every format uses.
absl::StatusOr<uint64_t> ParseDigits(std::string_view s, std::string_view field) {
  if (s.empty()) return FieldError(field, "is empty, expected an unsigned integer");
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return FieldError(field, absl::StrCat("'", AbslView(s), "' is not an unsigned integer"));
    }
    uint64_t d = c - '0';
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) {
      return FieldError(field, absl::StrCat("'", AbslView(s), "' does not fit in 64 bits"));
    }
    v = v * 10 + d;
  }
  return v;
}

absl::StatusOr<uint64_t> Scale(uint64_t v, uint64_t factor, std::string_view field) {
  if (v > std::numeric_limits<uint64_t>::max() / factor) {
    return FieldError(field, absl::StrCat(v, " is out of range as a timestamp"));
  }
  return v * factor;
}

}  // namespace

absl::StatusOr<uint64_t> ReadU64(const Value& v, std::string_view field) {
  if (json::IsNumber(v)) return ParseDigits(json::NumberText(v), field);
  if (IsText(v)) return ParseDigits(Text(v), field);
  return FieldError(field, "must be an unsigned integer (number or digit string)");
}

absl::StatusOr<uint64_t> ParseIsoTimestamp(std::string_view text) {
  // absl::ParseTime does the calendar work; these are the ISO-8601 shapes
  // producers send. %E*S takes any fraction; %Ez takes Z or +hh:mm.
  static constexpr const char* kLayouts[] = {"%Y-%m-%d%ET%H:%M:%E*S%Ez", "%Y-%m-%d%ET%H:%M:%E*S",
                                             "%Y-%m-%d %H:%M:%E*S%Ez",   "%Y-%m-%d %H:%M:%E*S",
                                             "%Y-%m-%d%ET%H:%M%Ez",      "%Y-%m-%d"};
  absl::Time t;
  std::string err;
  for (const char* layout : kLayouts) {
    if (absl::ParseTime(layout, AbslView(text), absl::UTCTimeZone(), &t, &err)) {
      if (t < absl::UnixEpoch()) {
        return absl::InvalidArgumentError(absl::StrCat("'", AbslView(text), "' is before 1970"));
      }
      return static_cast<uint64_t>(absl::ToUnixMicros(t));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "'", AbslView(text), "' is not an ISO-8601 timestamp (e.g. 2020-05-13T15:40:06Z)"));
}

absl::StatusOr<uint64_t> ReadTimestamp(const Value& v, EpochUnit unit, std::string_view field) {
  std::string_view digits;
  if (json::IsNumber(v)) {
    digits = json::NumberText(v);
  } else if (IsText(v)) {
    std::string_view s = Text(v);
    if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) {
      auto t = ParseIsoTimestamp(s);
      if (!t.ok()) return FieldError(field, t.status().message());
      return t;
    }
    digits = s;
  } else {
    return FieldError(field, "must be an ISO-8601 string or an integer epoch time");
  }
  CAIRN_ASSIGN_OR_RETURN(uint64_t n, ParseDigits(digits, field));
  switch (unit) {
    case EpochUnit::kSeconds:
      return Scale(n, 1000000, field);
    case EpochUnit::kMillis:
      return Scale(n, 1000, field);
    case EpochUnit::kMicros:
      return n;
  }
  return n;
}

namespace {

bool IsScalar(const Value& v) { return v.IsString() || v.IsNumber() || v.IsBool(); }

}  // namespace

absl::StatusOr<std::string> KeyFromMessageKey(const Value& key, std::string_view field) {
  const Value* k = &key;
  // Debezium's JSON converter with schemas enabled wraps keys too.
  if (k->IsObject() && k->HasMember("schema") && k->HasMember("payload")) {
    k = Member(*k, "payload");
    if (k == nullptr) return FieldError(field, "payload of the key is null");
  }
  if (k->IsObject()) {
    if (k->MemberCount() == 0) return FieldError(field, "is an empty object");
    for (auto m = k->MemberBegin(); m != k->MemberEnd(); ++m) {
      if (!IsScalar(m->value) && !m->value.IsNull()) {
        return FieldError(absl::StrCat(AbslView(field), ".", AbslView(Text(m->name))),
                          "key fields must be strings, numbers or booleans");
      }
    }
    if (k->MemberCount() == 1) return json::Serialize(k->MemberBegin()->value);
    return json::Serialize(*k);
  }
  if (!IsScalar(*k)) return FieldError(field, "must be an object or a scalar");
  return json::Serialize(*k);
}

absl::StatusOr<std::string> KeyFromFields(const Value& image, std::string_view image_name,
                                          const std::vector<std::string>& fields) {
  if (!image.IsObject()) return FieldError(image_name, "must be an object to read the key from");
  json::Document key;
  key.SetObject();
  for (const std::string& f : fields) {
    auto it = image.FindMember(rapidjson::StringRef(f.data(), f.size()));
    if (it == image.MemberEnd() || it->value.IsNull()) {
      return FieldError(absl::StrCat(AbslView(image_name), ".", f), "key field is missing or null");
    }
    if (!IsScalar(it->value)) {
      return FieldError(absl::StrCat(AbslView(image_name), ".", f),
                        "key field must be a string, number or boolean");
    }
    if (fields.size() == 1) return json::Serialize(it->value);
    key.AddMember(Value(f.data(), static_cast<rapidjson::SizeType>(f.size()), key.GetAllocator()),
                  Value(it->value, key.GetAllocator()), key.GetAllocator());
  }
  return json::Serialize(key);
}

const std::vector<std::string>* ConfiguredKeyFields(const Context& ctx,
                                                    const std::string& collection) {
  auto it = ctx.source.key_fields.find(collection);
  return it == ctx.source.key_fields.end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> ResolveCollection(const Context& ctx, std::string_view name,
                                              std::string_view field) {
  if (!ctx.options.force_collection.empty()) return ctx.options.force_collection;
  if (!name.empty()) {
    auto it = ctx.source.collection_map.find(std::string(name));
    return it != ctx.source.collection_map.end() ? it->second : std::string(name);
  }
  if (!ctx.options.collection.empty()) return ctx.options.collection;
  if (!ctx.source.default_collection.empty()) return ctx.source.default_collection;
  return FieldError(field, absl::StrCat("the record names no collection and source '",
                                        AbslView(ctx.source.name), "' has no default collection"));
}

absl::StatusOr<std::vector<Event>> DecodeLines(const Context& ctx, std::string_view payload,
                                               RecordDecoder decode) {
  std::vector<Event> out;
  size_t index = 0, line_no = 0, start = 0;
  while (start < payload.size()) {
    size_t end = payload.find('\n', start);
    if (end == std::string_view::npos) end = payload.size();
    std::string_view line = payload.substr(start, end - start);
    ++line_no;
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    absl::Status s = decode(ctx, line, &out);
    if (!s.ok()) return RecordError(index, line_no, s);
    ++index;
  }
  return out;
}

absl::StatusOr<json::Document> ParseObject(std::string_view text) {
  CAIRN_ASSIGN_OR_RETURN(json::Document doc, json::Parse(text));
  if (!doc.IsObject()) return absl::InvalidArgumentError("not a JSON object");
  return doc;
}

}  // namespace cairn::formats
