// The message shapes of a sink: RenderChange, RenderDatapoints and
// RenderMessages (destination.h).
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cairn/connectors.h"
#include "cairn/json.h"
#include "cairn/json_writer.h"
#include "cairn/status.h"
#include "destination.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::connectors {
namespace {

using namespace json_writer;  // NOLINT(build/namespaces)

std::string Iso(uint64_t micros) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                          absl::FromUnixMicros(static_cast<int64_t>(micros)), absl::UTCTimeZone());
}

void Provenance(Writer& w, std::string_view sink, const Change& c) {
  w.StartObject();
  Str(w, "sink", sink);
  Str(w, "source", c.source);
  PositionJson(w, c.position);
  w.Key("seq");
  w.Uint64(c.seq);
  w.EndObject();
}

std::string Subject(const SinkDefinition& d, const Change& c) {
  std::string s = d.subject;
  for (const auto& [p, v] :
       {std::pair<std::string_view, std::string_view>{"{collection}", c.collection},
        {"{source}", c.source},
        {"{sink}", d.name}}) {
    for (size_t at = 0; (at = s.find(p, at)) != std::string::npos; at += v.size()) {
      s.replace(at, p.size(), v.empty() ? std::string_view("_") : v);
    }
  }
  return s;
}

}  // namespace

std::string RenderChange(std::string_view shape, std::string_view sink, const Change& c) {
  // cairn: the change record (cairn/json.h), with an id for idempotent
  // receivers.
  if (shape != "debezium" && shape != "mia-projection-update") {
    return ChangeJson(c, absl::StrCat(AbslView(sink), "-", c.seq));
  }
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  if (shape == "debezium") {
    // Debezium's envelope: op c/u/d, before, after, a source block (here
    // cairn's provenance), ts_ms (when cairn sent it).
    Str(w, "op", c.before.empty() ? "c" : c.after.empty() ? "d" : "u");
    Json(w, "before", c.before);
    Json(w, "after", c.after);
    w.Key("source");
    w.StartObject();
    Str(w, "connector", "cairn");
    Str(w, "name", sink);
    Str(w, "collection", c.collection);
    Json(w, "key", c.key);
    Str(w, "cairn_source", c.source);
    w.Key("ts_us");
    w.Uint64(c.position.timestamp);
    w.Key("tick");
    w.Uint64(c.position.tick);
    w.Key("seq");
    w.Uint64(c.seq);
    w.EndObject();
    w.Key("ts_ms");
    w.Int64(absl::ToUnixMillis(absl::Now()));
  } else {
    // mia-projection-update: Mia-Platform Fast Data's Projection Update,
    // with the triggering event's provenance where Mia has
    // __internal__kafkaInfo.
    Str(w, "operationType", c.before.empty() ? "INSERT" : c.after.empty() ? "DELETE" : "UPDATE");
    Str(w, "operationTimestamp", Iso(c.position.timestamp));
    Str(w, "projectionName", c.collection);
    Str(w, "documentId", c.key);
    Json(w, "key", c.key);
    Json(w, "before", c.before);
    Json(w, "after", c.after);
    w.Key("__internal__cairnInfo");
    Provenance(w, sink, c);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string RenderDatapoints(std::string_view schema, const std::vector<Change>& changes) {
  // Series in the order they first appear; each one's points in seq order.
  std::vector<const std::string*> order;
  std::map<std::string_view, std::vector<const Change*>> points;
  for (const Change& c : changes) {
    if (c.after.empty()) continue;  // a delete carries no point
    auto [it, fresh] = points.try_emplace(c.key);
    if (fresh) order.push_back(&c.key);
    it->second.push_back(&c);
  }
  if (order.empty()) return "";
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key("data");
  w.StartObject();
  w.Key("items");
  w.StartArray();
  for (const std::string* key : order) {
    w.StartObject();
    // The series id: the key's text when it is a JSON string, else the key.
    rapidjson::Document k;
    k.Parse(key->data(), key->size());
    w.Key("id");
    if (k.IsString()) {
      w.String(k.GetString(), k.GetStringLength());
    } else {
      w.RawValue(key->data(), key->size(), rapidjson::kObjectType);
    }
    w.Key("datapoints");
    w.StartArray();
    for (const Change* c : points[*key])
      w.RawValue(c->after.data(), c->after.size(), rapidjson::kObjectType);
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  Str(w, "schema", schema);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::vector<Message> RenderMessages(const SinkDefinition& d, const std::vector<Change>& batch) {
  std::vector<Message> out;
  if (batch.empty()) return out;
  if (d.shape == "omnia-datapoints") {
    std::string body = RenderDatapoints(d.omnia_schema, batch);
    if (!body.empty()) {
      out.push_back(
          {.subject = Subject(d, batch.front()),
           .id = absl::StrCat(AbslView(d.name), "-", batch.front().seq, "-", batch.back().seq),
           .body = std::move(body)});
    }
    return out;
  }
  out.reserve(batch.size());
  for (const Change& c : batch) {
    out.push_back({.subject = Subject(d, c),
                   .id = absl::StrCat(AbslView(d.name), "-", c.seq),
                   .body = RenderChange(d.shape, d.name, c)});
  }
  return out;
}

}  // namespace cairn::connectors
