#include "key_codec.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "json_doc.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::keys {
namespace {

constexpr char kNull = 0x10;
constexpr char kFalse = 0x20;
constexpr char kTrue = 0x21;
constexpr char kInt = 0x30;
constexpr char kNumberText = 0x31;
constexpr char kString = 0x40;
constexpr char kComposite = 0x50;

// Parses JSON integer text into int64 when it is a plain integer literal that
// fits; decimals, exponents and larger integers keep their text instead.
bool ParseInt64(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  bool negative = text[0] == '-';
  std::string_view digits = negative ? text.substr(1) : text;
  if (digits.empty() || digits.size() > 19) return false;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  // 19 digits can exceed 2^63; check bounds explicitly.
  if (!negative && v > static_cast<uint64_t>(INT64_MAX)) return false;
  if (negative && v > static_cast<uint64_t>(INT64_MAX) + 1) return false;
  *out = negative ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
  return true;
}

absl::Status EncodeScalar(const json::Value& v, std::string_view field, std::string* out) {
  if (json::IsNumber(v)) {
    std::string_view text = json::NumberText(v);
    int64_t i;
    if (ParseInt64(text, &i)) {
      out->push_back(kInt);
      AppendU64(static_cast<uint64_t>(i) ^ (uint64_t{1} << 63), out);
    } else {
      out->push_back(kNumberText);
      AppendEscaped(text, out);
    }
    return absl::OkStatus();
  }
  if (v.IsString()) {
    out->push_back(kString);
    AppendEscaped(std::string_view(v.GetString(), v.GetStringLength()), out);
    return absl::OkStatus();
  }
  if (v.IsBool()) {
    out->push_back(v.GetBool() ? kTrue : kFalse);
    return absl::OkStatus();
  }
  if (v.IsNull()) {
    out->push_back(kNull);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("key field '", AbslView(field), "' must be a scalar, not an object or array"));
}

}  // namespace

void AppendEscaped(std::string_view s, std::string* out) {
  for (char c : s) {
    out->push_back(c);
    if (c == '\0') out->push_back('\xFF');
  }
  out->push_back('\0');
  out->push_back('\x01');
}

void AppendU64(uint64_t v, std::string* out) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xFF));
  }
}

bool ConsumeEscaped(std::string_view* in, std::string* out) {
  out->clear();
  size_t i = 0;
  while (i < in->size()) {
    char c = (*in)[i];
    if (c != '\0') {
      out->push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= in->size()) return false;
    char next = (*in)[i + 1];
    if (next == '\x01') {
      in->remove_prefix(i + 2);
      return true;
    }
    if (next != '\xFF') return false;
    out->push_back('\0');
    i += 2;
  }
  return false;
}

bool ConsumeU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i) {
    r = (r << 8) | static_cast<uint8_t>((*in)[i]);
  }
  in->remove_prefix(8);
  *v = r;
  return true;
}

absl::StatusOr<std::string> EncodeKey(std::string_view key_json) {
  if (key_json.empty()) return absl::InvalidArgumentError("key is empty");
  auto doc = json::Parse(key_json, json::kMaxKeyDepth);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("key is not valid JSON: ", doc.status().message()));
  }
  std::string out;
  if (!doc->IsObject()) {
    if (doc->IsNull()) return absl::InvalidArgumentError("key is null");
    if (doc->IsString() && doc->GetStringLength() == 0) {
      return absl::InvalidArgumentError("key is empty");
    }
    CAIRN_RETURN_IF_ERROR(EncodeScalar(*doc, "(scalar)", &out));
    return out;
  }
  if (doc->MemberCount() == 0) {
    return absl::InvalidArgumentError("key is empty: composite key has no fields");
  }
  std::vector<std::pair<std::string_view, const json::Value*>> fields;
  for (auto it = doc->MemberBegin(); it != doc->MemberEnd(); ++it) {
    fields.emplace_back(std::string_view(it->name.GetString(), it->name.GetStringLength()),
                        &it->value);
  }
  std::sort(fields.begin(), fields.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < fields.size(); ++i) {
    if (fields[i].first == fields[i - 1].first) {
      return absl::InvalidArgumentError(
          absl::StrCat("key field '", AbslView(fields[i].first), "' appears twice"));
    }
  }
  out.push_back(kComposite);
  for (const auto& [name, value] : fields) {
    AppendEscaped(name, &out);
    CAIRN_RETURN_IF_ERROR(EncodeScalar(*value, name, &out));
  }
  out.push_back('\0');
  out.push_back('\0');
  return out;
}

namespace {

// Decodes one tagged scalar into `w`; advances `in`.
template <typename Writer>
bool DecodeScalar(std::string_view* in, Writer& w) {
  if (in->empty()) return false;
  char tag = (*in)[0];
  in->remove_prefix(1);
  std::string s;
  switch (tag) {
    case kNull:
      return w.Null();
    case kFalse:
      return w.Bool(false);
    case kTrue:
      return w.Bool(true);
    case kInt: {
      uint64_t u;
      if (!ConsumeU64(in, &u)) return false;
      return w.Int64(static_cast<int64_t>(u ^ (uint64_t{1} << 63)));
    }
    case kNumberText:
      if (!ConsumeEscaped(in, &s)) return false;
      return w.RawValue(s.data(), s.size(), rapidjson::kNumberType);
    case kString:
      if (!ConsumeEscaped(in, &s)) return false;
      return w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    default:
      return false;
  }
}

// Walks a canonical key; writes JSON to `w` when given. Returns bytes used, 0
// when malformed.
template <typename Writer>
size_t WalkKey(std::string_view bytes, Writer& w) {
  std::string_view in = bytes;
  if (in.empty()) return 0;
  if (in[0] != kComposite) {
    if (!DecodeScalar(&in, w)) return 0;
    return bytes.size() - in.size();
  }
  in.remove_prefix(1);
  w.StartObject();
  std::string name;
  while (true) {
    if (in.size() >= 2 && in[0] == '\0' && in[1] == '\0') {
      in.remove_prefix(2);
      w.EndObject();
      return bytes.size() - in.size();
    }
    if (!ConsumeEscaped(&in, &name)) return 0;
    w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
    if (!DecodeScalar(&in, w)) return 0;
  }
}

// A rapidjson handler that accepts everything and writes nothing: lets
// KeyLength share WalkKey's parser.
struct NullWriter {
  bool Null() { return true; }
  bool Bool(bool) { return true; }
  bool Int64(int64_t) { return true; }
  bool RawValue(const char*, size_t, rapidjson::Type) { return true; }
  bool String(const char*, rapidjson::SizeType) { return true; }
  bool Key(const char*, rapidjson::SizeType) { return true; }
  bool StartObject() { return true; }
  bool EndObject() { return true; }
};

}  // namespace

absl::StatusOr<std::string> KeyToJson(std::string_view key_bytes) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  size_t n = WalkKey(key_bytes, w);
  if (n == 0 || n != key_bytes.size()) {
    return absl::DataLossError("malformed canonical key bytes");
  }
  return std::string(buf.GetString(), buf.GetSize());
}

size_t KeyLength(std::string_view bytes) {
  NullWriter w;
  return WalkKey(bytes, w);
}

std::string StringKeyPrefix(std::string_view prefix) {
  std::string out(1, kString);
  AppendEscaped(prefix, &out);
  out.resize(out.size() - 2);  // drop the terminator: a prefix, not a value
  return out;
}

std::string EntityPrefix(std::string_view collection, std::string_view key_bytes) {
  std::string out;
  out.reserve(collection.size() + key_bytes.size() + 2);
  AppendEscaped(collection, &out);
  out.append(key_bytes);
  return out;
}

size_t EntityPrefixLength(std::string_view cf_key) {
  // The escaped collection (read in place: this runs per memtable insert,
  // see store_open.cc), then the canonical key.
  size_t i = 0;
  for (;;) {
    i = cf_key.find('\0', i);
    if (i == std::string_view::npos || i + 1 >= cf_key.size()) return 0;
    if (cf_key[i + 1] == '\x01') break;
    if (cf_key[i + 1] != '\xff') return 0;
    i += 2;
  }
  size_t key_len = KeyLength(cf_key.substr(i + 2));
  if (key_len == 0) return 0;
  return i + 2 + key_len;
}

std::string LogKey(std::string_view source, Position pos, std::string_view collection,
                   std::string_view key_bytes) {
  std::string out;
  AppendEscaped(source, &out);
  AppendU64(pos.timestamp, &out);
  AppendU64(pos.tick, &out);
  AppendEscaped(collection, &out);
  out.append(key_bytes);
  return out;
}

namespace {
// The position and source part of an ascending (format 4) history key.
void AppendAscendingVersion(Position pos, std::string_view source, std::string* out) {
  AppendU64(pos.timestamp, out);
  AppendU64(pos.tick, out);
  AppendEscaped(source, out);
}
// Complements the bytes of `out` from `from` on: for the prefix-free parts
// of a key (u64s, escaped strings), the order of the complemented bytes is
// the reverse of the order of the originals.
void ComplementFrom(size_t from, std::string* out) {
  for (size_t i = from; i < out->size(); ++i) (*out)[i] = static_cast<char>(~(*out)[i]);
}
std::string Complemented(std::string_view in) {
  std::string out(in);
  ComplementFrom(0, &out);
  return out;
}
}  // namespace

std::string HistoryKey(std::string_view entity, Position pos, std::string_view source) {
  std::string out(entity);
  AppendAscendingVersion(pos, source, &out);
  ComplementFrom(entity.size(), &out);
  return out;
}

std::string HistoryPositionPrefix(std::string_view entity, Position pos) {
  std::string out(entity);
  AppendU64(~pos.timestamp, &out);
  AppendU64(~pos.tick, &out);
  return out;
}

bool ParseHistorySuffix(std::string_view suffix, Position* pos, std::string* source) {
  std::string plain = Complemented(suffix);
  std::string_view in = plain;
  return ConsumeU64(&in, &pos->timestamp) && ConsumeU64(&in, &pos->tick) &&
         ConsumeEscaped(&in, source) && in.empty();
}

bool HistorySuffixTimestamp(std::string_view suffix, uint64_t* timestamp) {
  if (!ConsumeU64(&suffix, timestamp)) return false;
  *timestamp = ~*timestamp;
  return true;
}

std::string EntitySeqKey(std::string_view entity, uint64_t seq) {
  std::string out(entity);
  AppendU64(~seq, &out);
  return out;
}

bool ParseEntitySeqSuffix(std::string_view suffix, uint64_t* seq) {
  if (!ConsumeU64(&suffix, seq) || !suffix.empty()) return false;
  *seq = ~*seq;
  return true;
}

std::string NewestFirstKey(NewestFirstFamily family, std::string_view ascending_key) {
  size_t n = EntityPrefixLength(ascending_key);
  if (n == 0) return "";
  std::string_view rest = ascending_key.substr(n);
  if (family == NewestFirstFamily::kEntitySeq) {
    uint64_t seq;
    if (!ConsumeU64(&rest, &seq) || !rest.empty()) return "";
    return EntitySeqKey(ascending_key.substr(0, n), seq);
  }
  Position pos;
  std::string source;
  if (!ConsumeU64(&rest, &pos.timestamp) || !ConsumeU64(&rest, &pos.tick) ||
      !ConsumeEscaped(&rest, &source) || !rest.empty()) {
    return "";
  }
  return HistoryKey(ascending_key.substr(0, n), pos, source);
}

std::string SeqKey(uint64_t seq) {
  std::string out;
  AppendU64(seq, &out);
  return out;
}

std::string CollectionPrefix(std::string_view collection) {
  std::string out;
  AppendEscaped(collection, &out);
  return out;
}

std::string StagingPrefix(std::string_view session_id) {
  std::string out;
  AppendEscaped(session_id, &out);
  return out;
}

std::string StagingKey(std::string_view session_id, std::string_view key_bytes) {
  std::string out = StagingPrefix(session_id);
  out.append(key_bytes);
  return out;
}

std::string LogSortPrefix() { return StagingPrefix(""); }

std::string AtomicTruncatesPrefix(std::string_view session_id) {
  std::string out = StagingPrefix(session_id);
  out.push_back(kAtomicTruncateTag);
  return out;
}

std::string AtomicEventsPrefix(std::string_view session_id) {
  std::string out = StagingPrefix(session_id);
  out.push_back(kAtomicEventTag);
  return out;
}

std::string AtomicTruncateKey(std::string_view session_id, uint64_t index) {
  std::string out = AtomicTruncatesPrefix(session_id);
  AppendU64(index, &out);
  return out;
}

std::string AtomicEventKey(std::string_view session_id, std::string_view entity, Position pos,
                           std::string_view source, uint64_t index) {
  std::string out = AtomicEventsPrefix(session_id);
  out.append(entity);
  AppendAscendingVersion(pos, source, &out);
  AppendU64(index, &out);
  return out;
}

namespace {
std::string MetaKey(std::string_view prefix, std::string_view name) {
  std::string out(prefix);
  out.append(name);
  return out;
}
}  // namespace

std::string SourceStatsKey(std::string_view source) {
  return MetaKey(internal::kMetaSourcePrefix, source);
}
std::string RegistryKey(std::string_view source) {
  return MetaKey(internal::kMetaRegistryPrefix, source);
}
std::string SessionKey(std::string_view session_id) {
  return MetaKey(internal::kMetaSessionPrefix, session_id);
}
std::string CheckpointKey(std::string_view name) {
  return MetaKey(internal::kMetaCheckpointPrefix, name);
}

std::string SideRecordKey(std::string_view name) {
  return MetaKey(internal::kMetaSidePrefix, name);
}

std::string TruncateMarkerKey(std::string_view collection, Position pos, std::string_view source) {
  std::string out(internal::kMetaTruncatePrefix);
  AppendEscaped(collection, &out);
  AppendU64(pos.timestamp, &out);
  AppendU64(pos.tick, &out);
  AppendEscaped(source, &out);
  return out;
}

bool ParseTruncateMarkerKey(std::string_view key, std::string* collection, Position* pos,
                            std::string* source) {
  if (!key.starts_with(internal::kMetaTruncatePrefix)) return false;
  key.remove_prefix(internal::kMetaTruncatePrefix.size());
  return ConsumeEscaped(&key, collection) && ConsumeU64(&key, &pos->timestamp) &&
         ConsumeU64(&key, &pos->tick) && ConsumeEscaped(&key, source) && key.empty();
}

std::string PrefixSuccessor(std::string_view prefix) {
  std::string out(prefix);
  while (!out.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(out.back());
    if (c != 0xFF) {
      ++c;
      return out;
    }
    out.pop_back();
  }
  return out;
}

}  // namespace cairn::keys
