// ChangeJson and EntityJson (cairn/json.h), written with RapidJSON.
#include "cairn/json.h"
#include "cairn/json_writer.h"

namespace cairn {
using namespace json_writer;  // NOLINT(build/namespaces)

std::string ChangeJson(const Change& c, std::string_view id) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  if (!id.empty()) Str(w, "id", id);
  w.Key("seq");
  w.Uint64(c.seq);
  Str(w, "collection", c.collection);
  Json(w, "key", c.key);
  Str(w, "op", OpName(c.op));
  Json(w, "before", c.before);
  Json(w, "after", c.after);
  PositionJson(w, c.position);
  Str(w, "source", c.source);
  w.EndObject();
  return Text(buf);
}

std::string EntityJson(const Entity& e) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  Str(w, "collection", e.collection);
  Json(w, "key", e.key);
  Json(w, "document", e.document);
  w.Key("complete");
  w.Bool(e.complete);
  PositionJson(w, e.position);
  Str(w, "source", e.source);
  w.Key("seq");
  w.Uint64(e.seq);
  w.EndObject();
  return Text(buf);
}

}  // namespace cairn
