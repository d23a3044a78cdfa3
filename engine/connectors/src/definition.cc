// A connector's definition as JSON, and its bounds (cairn/connectors.h).
#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cairn/connectors.h"
#include "cairn/status.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::connectors {
namespace {

constexpr size_t kMaxName = 128;
constexpr size_t kMaxUrls = 16;
constexpr size_t kMaxUrlBytes = 4096;
constexpr size_t kMaxHeaders = 64;
constexpr size_t kMaxHeaderBytes = 8192;
constexpr uint32_t kMaxBatchEvents = 100000;

absl::Status Bad(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("connector ", AbslView(field), ": ", AbslView(why)));
}

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// Reads an optional non-negative whole number field.
absl::Status Whole(const rapidjson::Value& o, const char* field, uint64_t max, uint64_t* out) {
  auto it = o.FindMember(field);
  if (it == o.MemberEnd()) return absl::OkStatus();
  if (!it->value.IsUint64() || it->value.GetUint64() > max) {
    return Bad(field, absl::StrCat("must be a whole number from 0 to ", max));
  }
  *out = it->value.GetUint64();
  return absl::OkStatus();
}

absl::Status Text(const rapidjson::Value& o, const char* field, std::string* out) {
  auto it = o.FindMember(field);
  if (it == o.MemberEnd()) return absl::OkStatus();
  if (!it->value.IsString()) return Bad(field, "must be a string");
  out->assign(it->value.GetString(), it->value.GetStringLength());
  return absl::OkStatus();
}

void Strings(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* k,
             const std::vector<std::string>& v) {
  w.Key(k);
  w.StartArray();
  for (const std::string& x : v) w.String(x.data(), static_cast<rapidjson::SizeType>(x.size()));
  w.EndArray();
}

absl::Status StringList(const rapidjson::Value& o, const char* field,
                        std::vector<std::string>* out) {
  auto it = o.FindMember(field);
  if (it == o.MemberEnd()) return absl::OkStatus();
  if (!it->value.IsArray()) return Bad(field, "must be an array of strings");
  for (const auto& u : it->value.GetArray()) {
    if (!u.IsString()) return Bad(field, "must be an array of strings");
    out->emplace_back(u.GetString(), u.GetStringLength());
  }
  return absl::OkStatus();
}

void Headers(rapidjson::Writer<rapidjson::StringBuffer>& w,
             const std::map<std::string, std::string>& headers, const char* key = "headers") {
  w.Key(key);
  w.StartObject();
  for (const auto& [k, v] : headers) {
    w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  }
  w.EndObject();
}

absl::Status ReadHeaders(const rapidjson::Value& o, std::map<std::string, std::string>* out,
                         const char* key = "headers") {
  auto it = o.FindMember(key);
  if (it == o.MemberEnd()) return absl::OkStatus();
  if (!it->value.IsObject()) return Bad(key, "must be an object of strings");
  for (const auto& m : it->value.GetObject()) {
    if (!m.value.IsString()) return Bad(key, "must be an object of strings");
    (*out)[std::string(m.name.GetString(), m.name.GetStringLength())] =
        std::string(m.value.GetString(), m.value.GetStringLength());
  }
  return absl::OkStatus();
}

// A NATS subject (or pattern): dot-separated tokens of printable ASCII
// without spaces; `*` a whole token, `>` a whole last token.
absl::Status CheckSubject(std::string_view field, std::string_view subject, bool wildcards = true) {
  bool ok = !subject.empty() && subject.size() <= kMaxUrlBytes;
  std::vector<std::string> tokens = absl::StrSplit(AbslView(subject), '.');
  for (size_t i = 0; ok && i < tokens.size(); ++i) {
    const std::string& t = tokens[i];
    ok = !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c > ' ' && c < 127; });
    if (ok && (t.find('*') != t.npos || t.find('>') != t.npos)) {
      ok = wildcards && (t == "*" || (t == ">" && i + 1 == tokens.size()));
    }
  }
  if (ok) return absl::OkStatus();
  return Bad(field, absl::StrCat("\"", Excerpt(subject), "\" is not a NATS subject",
                                 wildcards ? " pattern" : "", " (dot-separated tokens",
                                 wildcards ? "; * a whole token, > the last" : "", ")"));
}

// `what` is "connector" or "sink".
absl::Status CheckNameAndHeaders(std::string_view what, const std::string& name,
                                 const std::map<std::string, std::string>& headers) {
  if (name.empty() || name.size() > kMaxName || !std::all_of(name.begin(), name.end(), NameChar)) {
    return absl::InvalidArgumentError(absl::StrCat(AbslView(what), " name: must be 1 to ", kMaxName,
                                                   " of A-Z a-z 0-9 . _ -, not \"", Excerpt(name),
                                                   "\""));
  }
  if (headers.size() > kMaxHeaders) {
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(what), " headers: at most ", kMaxHeaders, " headers"));
  }
  for (const auto& [k, v] : headers) {
    bool token = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
      return NameChar(c) || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' ||
             c == '*' || c == '+' || c == '^' || c == '`' || c == '|' || c == '~';
    });
    if (!token || k.size() + v.size() > kMaxHeaderBytes ||
        v.find_first_of("\r\n") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(AbslView(what), " headers[\"", Excerpt(k),
                       "\"]: must be a header name and a one-line value"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ToJson(const ConnectorDefinition& d) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto str = [&](const char* k, const std::string& v) {
    w.Key(k);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  };
  w.StartObject();
  str("name", d.name);
  str("type", d.type);
  str("source", d.source);
  Strings(w, "urls", d.urls);
  Headers(w, d.headers);
  if (!d.ca_file.empty()) str("ca_file", d.ca_file);
  w.Key("retention_seconds");
  w.Uint64(absl::ToInt64Seconds(d.retention));
  w.Key("batch_events");
  w.Uint(d.batch_events);
  w.Key("batch_millis");
  w.Uint64(absl::ToInt64Milliseconds(d.batch_time));
  w.Key("durable");
  w.Bool(d.durable);
  str("on_error", d.on_error == OnError::kSkip ? "skip" : "stop");
  w.Key("initial_backoff_millis");
  w.Uint64(absl::ToInt64Milliseconds(d.initial_backoff));
  w.Key("max_backoff_millis");
  w.Uint64(absl::ToInt64Milliseconds(d.max_backoff));
  w.Key("idle_timeout_seconds");
  w.Uint64(absl::ToInt64Seconds(d.idle_timeout));
  if (d.type == "nats") {
    str("stream", d.stream);
    str("filter_subject", d.filter_subject);
    str("consumer", d.consumer);
    Headers(w, d.subjects, "subjects");
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

absl::StatusOr<ConnectorDefinition> FromJson(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "connector definition is not JSON: ", rapidjson::GetParseError_En(doc.GetParseError()),
        " at offset ", doc.GetErrorOffset()));
  }
  if (!doc.IsObject()) return absl::InvalidArgumentError("connector definition must be an object");
  ConnectorDefinition d;
  CAIRN_RETURN_IF_ERROR(Text(doc, "name", &d.name));
  CAIRN_RETURN_IF_ERROR(Text(doc, "type", &d.type));
  CAIRN_RETURN_IF_ERROR(Text(doc, "source", &d.source));
  CAIRN_RETURN_IF_ERROR(Text(doc, "ca_file", &d.ca_file));
  CAIRN_RETURN_IF_ERROR(StringList(doc, "urls", &d.urls));
  CAIRN_RETURN_IF_ERROR(ReadHeaders(doc, &d.headers));
  CAIRN_RETURN_IF_ERROR(Text(doc, "stream", &d.stream));
  CAIRN_RETURN_IF_ERROR(Text(doc, "filter_subject", &d.filter_subject));
  CAIRN_RETURN_IF_ERROR(Text(doc, "consumer", &d.consumer));
  CAIRN_RETURN_IF_ERROR(ReadHeaders(doc, &d.subjects, "subjects"));
  uint64_t v = absl::ToInt64Seconds(d.retention);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "retention_seconds", uint64_t{10} * 365 * 86400, &v));
  d.retention = absl::Seconds(v);
  v = d.batch_events;
  CAIRN_RETURN_IF_ERROR(Whole(doc, "batch_events", kMaxBatchEvents, &v));
  d.batch_events = static_cast<uint32_t>(v);
  v = absl::ToInt64Milliseconds(d.batch_time);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "batch_millis", 60000, &v));
  d.batch_time = absl::Milliseconds(v);
  if (auto it = doc.FindMember("durable"); it != doc.MemberEnd()) {
    if (!it->value.IsBool()) return Bad("durable", "must be true or false");
    d.durable = it->value.GetBool();
  }
  std::string on_error = "stop";
  CAIRN_RETURN_IF_ERROR(Text(doc, "on_error", &on_error));
  if (on_error != "stop" && on_error != "skip") return Bad("on_error", "must be stop or skip");
  d.on_error = on_error == "skip" ? OnError::kSkip : OnError::kStop;
  v = absl::ToInt64Milliseconds(d.initial_backoff);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "initial_backoff_millis", 3600000, &v));
  d.initial_backoff = absl::Milliseconds(v);
  v = absl::ToInt64Milliseconds(d.max_backoff);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "max_backoff_millis", 3600000, &v));
  d.max_backoff = absl::Milliseconds(v);
  v = absl::ToInt64Seconds(d.idle_timeout);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "idle_timeout_seconds", 86400, &v));
  d.idle_timeout = absl::Seconds(v);
  for (const auto& m : doc.GetObject()) {
    static constexpr std::string_view kKnown[] = {"name",
                                                  "type",
                                                  "source",
                                                  "urls",
                                                  "headers",
                                                  "ca_file",
                                                  "retention_seconds",
                                                  "batch_events",
                                                  "batch_millis",
                                                  "durable",
                                                  "on_error",
                                                  "initial_backoff_millis",
                                                  "max_backoff_millis",
                                                  "idle_timeout_seconds",
                                                  "stream",
                                                  "filter_subject",
                                                  "consumer",
                                                  "subjects"};
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown)) {
      return Bad(name, "is not a field of a connector definition");
    }
  }
  CAIRN_RETURN_IF_ERROR(Check(d));
  return d;
}

absl::Status Check(const ConnectorDefinition& d) {
  CAIRN_RETURN_IF_ERROR(CheckNameAndHeaders("connector", d.name, d.headers));
  if (d.type != "sse" && d.type != "nats") {
    return Bad("type",
               absl::StrCat("\"", Excerpt(d.type), "\" is not a connector type (sse, nats)"));
  }
  if (d.source.empty()) return Bad("source", "is required");
  if (d.urls.empty() || d.urls.size() > kMaxUrls) {
    return Bad("urls", absl::StrCat("must hold 1 to ", kMaxUrls, " URLs, not ", d.urls.size()));
  }
  const bool nats = d.type == "nats";
  for (size_t i = 0; i < d.urls.size(); ++i) {
    const std::string& u = d.urls[i];
    bool scheme = nats ? absl::StartsWith(u, "nats://") || absl::StartsWith(u, "tls://")
                       : absl::StartsWith(u, "http://") || absl::StartsWith(u, "https://");
    if (u.size() > kMaxUrlBytes || !scheme) {
      return Bad(absl::StrCat("urls[", i, "]"),
                 absl::StrCat("\"", Excerpt(u), "\" is not ",
                              nats ? "a nats:// or tls://" : "an http:// or https://",
                              " URL of at most ", kMaxUrlBytes, " bytes"));
    }
    if (std::find(d.urls.begin(), d.urls.begin() + i, u) != d.urls.begin() + i) {
      return Bad(absl::StrCat("urls[", i, "]"), "repeats an earlier URL");
    }
  }
  if (d.batch_events == 0) return Bad("batch_events", "must be at least 1");
  if (d.initial_backoff < absl::Milliseconds(1)) {
    return Bad("initial_backoff_millis", "must be at least 1");
  }
  if (d.max_backoff < d.initial_backoff) {
    return Bad("max_backoff_millis", "must not be less than initial_backoff_millis");
  }
  if (d.idle_timeout < absl::Seconds(1)) return Bad("idle_timeout_seconds", "must be at least 1");
  if (!nats) {
    if (!d.stream.empty() || !d.filter_subject.empty() || !d.consumer.empty() ||
        !d.subjects.empty()) {
      return Bad("stream", "stream, filter_subject, consumer and subjects are for nats connectors");
    }
    return absl::OkStatus();
  }
  if (!d.headers.empty()) return Bad("headers", "are for sse connectors");
  if (d.stream.empty() || d.stream.size() > kMaxName ||
      !std::all_of(d.stream.begin(), d.stream.end(), NameChar) ||
      d.stream.find('.') != std::string::npos) {
    return Bad("stream", "must be a JetStream stream name: 1 to 128 of A-Z a-z 0-9 _ -");
  }
  if (!d.consumer.empty() && (d.consumer.size() > kMaxName ||
                              !std::all_of(d.consumer.begin(), d.consumer.end(), NameChar) ||
                              d.consumer.find('.') != std::string::npos)) {
    return Bad("consumer", "must be a JetStream consumer name: 1 to 128 of A-Z a-z 0-9 _ -");
  }
  if (!d.filter_subject.empty())
    CAIRN_RETURN_IF_ERROR(CheckSubject("filter_subject", d.filter_subject));
  if (d.subjects.size() > kMaxHeaders) {
    return Bad("subjects", absl::StrCat("at most ", kMaxHeaders, " subject patterns"));
  }
  for (const auto& [subject, collection] : d.subjects) {
    std::string field = absl::StrCat("subjects[\"", Excerpt(subject), "\"]");
    CAIRN_RETURN_IF_ERROR(CheckSubject(field, subject));
    if (absl::Status s = CheckName("collection", collection); !s.ok()) {
      return Bad(field, StdView(s.message()));
    }
  }
  return absl::OkStatus();
}

std::string ConsumerName(const ConnectorDefinition& d) {
  if (!d.consumer.empty()) return d.consumer;
  std::string name = absl::StrCat("cairn_", AbslView(d.name));
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

bool SubjectMatches(std::string_view pattern, std::string_view subject) {
  std::vector<std::string> p = absl::StrSplit(AbslView(pattern), '.');
  std::vector<std::string> s = absl::StrSplit(AbslView(subject), '.');
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == ">") return s.size() > i;
    if (i >= s.size() || (p[i] != "*" && p[i] != s[i])) return false;
  }
  return p.size() == s.size();
}

std::string SinkToJson(const SinkDefinition& d) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto str = [&](const char* k, const std::string& v) {
    w.Key(k);
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  };
  w.StartObject();
  str("name", d.name);
  str("type", d.type);
  str("url", d.url);
  Headers(w, d.headers);
  if (!d.ca_file.empty()) str("ca_file", d.ca_file);
  str("shape", d.shape);
  if (d.type == "nats") str("subject", d.subject);
  if (d.shape == "omnia-datapoints") str("omnia_schema", d.omnia_schema);
  Strings(w, "sources", d.filter.sources);
  Strings(w, "collections", d.filter.collections);
  str("key_prefix", d.filter.key_prefix);
  Strings(w, "keys", d.filter.keys);
  w.Key("from_seq");
  w.Uint64(d.from_seq);
  w.Key("batch_changes");
  w.Uint(d.batch_changes);
  w.Key("timeout_millis");
  w.Uint64(absl::ToInt64Milliseconds(d.timeout));
  w.Key("initial_backoff_millis");
  w.Uint64(absl::ToInt64Milliseconds(d.initial_backoff));
  w.Key("max_backoff_millis");
  w.Uint64(absl::ToInt64Milliseconds(d.max_backoff));
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

absl::StatusOr<SinkDefinition> SinkFromJson(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return absl::InvalidArgumentError("sink definition is not a JSON object");
  }
  SinkDefinition d;
  CAIRN_RETURN_IF_ERROR(Text(doc, "name", &d.name));
  CAIRN_RETURN_IF_ERROR(Text(doc, "type", &d.type));
  CAIRN_RETURN_IF_ERROR(Text(doc, "url", &d.url));
  CAIRN_RETURN_IF_ERROR(Text(doc, "ca_file", &d.ca_file));
  CAIRN_RETURN_IF_ERROR(Text(doc, "shape", &d.shape));
  CAIRN_RETURN_IF_ERROR(Text(doc, "subject", &d.subject));
  CAIRN_RETURN_IF_ERROR(Text(doc, "omnia_schema", &d.omnia_schema));
  CAIRN_RETURN_IF_ERROR(Text(doc, "key_prefix", &d.filter.key_prefix));
  CAIRN_RETURN_IF_ERROR(StringList(doc, "sources", &d.filter.sources));
  CAIRN_RETURN_IF_ERROR(StringList(doc, "collections", &d.filter.collections));
  CAIRN_RETURN_IF_ERROR(StringList(doc, "keys", &d.filter.keys));
  CAIRN_RETURN_IF_ERROR(ReadHeaders(doc, &d.headers));
  uint64_t v = d.from_seq;
  CAIRN_RETURN_IF_ERROR(Whole(doc, "from_seq", UINT64_MAX, &v));
  d.from_seq = v;
  v = d.batch_changes;
  CAIRN_RETURN_IF_ERROR(Whole(doc, "batch_changes", 10000, &v));
  d.batch_changes = static_cast<uint32_t>(v);
  v = absl::ToInt64Milliseconds(d.timeout);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "timeout_millis", 600000, &v));
  d.timeout = absl::Milliseconds(v);
  v = absl::ToInt64Milliseconds(d.initial_backoff);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "initial_backoff_millis", 3600000, &v));
  d.initial_backoff = absl::Milliseconds(v);
  v = absl::ToInt64Milliseconds(d.max_backoff);
  CAIRN_RETURN_IF_ERROR(Whole(doc, "max_backoff_millis", 3600000, &v));
  d.max_backoff = absl::Milliseconds(v);
  CAIRN_RETURN_IF_ERROR(CheckSink(d));
  return d;
}

absl::Status CheckSink(const SinkDefinition& d) {
  CAIRN_RETURN_IF_ERROR(CheckNameAndHeaders("sink", d.name, d.headers));
  if (d.type != "http" && d.type != "nats") {
    return absl::InvalidArgumentError(
        absl::StrCat("sink type: \"", Excerpt(d.type), "\" is not a sink type (http, nats)"));
  }
  if (d.type == "http") {
    if (d.url.size() > kMaxUrlBytes ||
        !(absl::StartsWith(d.url, "http://") || absl::StartsWith(d.url, "https://"))) {
      return absl::InvalidArgumentError(
          absl::StrCat("sink url: \"", Excerpt(d.url),
                       "\" is not an http:// or https:// URL of at most ", kMaxUrlBytes, " bytes"));
    }
  } else {
    std::vector<std::string> servers = absl::StrSplit(d.url, ',');
    for (const std::string& u : servers) {
      if (d.url.size() > kMaxUrlBytes ||
          !(absl::StartsWith(u, "nats://") || absl::StartsWith(u, "tls://"))) {
        return absl::InvalidArgumentError(
            absl::StrCat("sink url: \"", Excerpt(d.url),
                         "\" is not a comma-separated list of nats:// or tls:// URLs of at most ",
                         kMaxUrlBytes, " bytes"));
      }
    }
    if (!d.headers.empty()) {
      return absl::InvalidArgumentError("sink headers: are for http sinks");
    }
    // The template with every placeholder filled in by a name must be a subject.
    std::string sample = d.subject;
    for (std::string_view p : {"{collection}", "{source}", "{sink}"}) {
      for (size_t at; (at = sample.find(p)) != std::string::npos;)
        sample.replace(at, p.size(), "x");
    }
    if (absl::Status s = CheckSubject("subject", sample, /*wildcards=*/false); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sink subject: \"", Excerpt(d.subject),
                       "\" is not a NATS subject template (dot-separated tokens, no wildcards; "
                       "{collection}, {source} and {sink} are replaced)"));
    }
  }
  if (d.shape != "cairn" && d.shape != "debezium" && d.shape != "mia-projection-update" &&
      d.shape != "omnia-datapoints") {
    return absl::InvalidArgumentError(absl::StrCat(
        "sink shape: \"", Excerpt(d.shape),
        "\" is not a message shape (cairn, debezium, mia-projection-update, omnia-datapoints)"));
  }
  if (d.omnia_schema.size() > kMaxUrlBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("sink omnia_schema: at most ", kMaxUrlBytes, " bytes"));
  }
  for (const std::string& s : d.filter.sources) CAIRN_RETURN_IF_ERROR(CheckName("source", s));
  for (const std::string& c : d.filter.collections) {
    CAIRN_RETURN_IF_ERROR(CheckName("collection", c));
  }
  if (d.batch_changes == 0 || d.batch_changes > 10000) {
    return absl::InvalidArgumentError("sink batch_changes: must be 1 to 10000");
  }
  if (d.timeout < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("sink timeout_millis: must be at least 100");
  }
  if (d.initial_backoff < absl::Milliseconds(1)) {
    return absl::InvalidArgumentError("sink initial_backoff_millis: must be at least 1");
  }
  if (d.max_backoff < d.initial_backoff) {
    return absl::InvalidArgumentError(
        "sink max_backoff_millis: must not be less than initial_backoff_millis");
  }
  return absl::OkStatus();
}

}  // namespace cairn::connectors
