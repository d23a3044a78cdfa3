// Small helpers for writing JSON with RapidJSON, shared by the layers that
// write the same shapes: cairn/json.h (changes, entities), the sinks'
// message shapes (engine/connectors) and cairnd's HTTP API. Header-only;
// target cairn_json_writer (engine/CMakeLists.txt), never installed.
#ifndef CAIRN_JSON_WRITER_H_
#define CAIRN_JSON_WRITER_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "cairn/event.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::json_writer {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

// "k": "v"
inline void Str(Writer& w, const char* k, std::string_view v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

// "k": <stored JSON text (a key, a document)>; empty text is null.
inline void Json(Writer& w, const char* k, std::string_view json) {
  w.Key(k);
  if (json.empty()) {
    w.Null();
  } else {
    w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  }
}

// "position": {"timestamp", "tick"}
inline void PositionJson(Writer& w, const Position& p) {
  w.Key("position");
  w.StartObject();
  w.Key("timestamp");
  w.Uint64(p.timestamp);
  w.Key("tick");
  w.Uint64(p.tick);
  w.EndObject();
}

// Counters as "name": number members.
inline void Uints(Writer& w, std::initializer_list<std::pair<const char*, uint64_t>> fields) {
  for (const auto& [k, v] : fields) {
    w.Key(k);
    w.Uint64(v);
  }
}

inline std::string Text(const rapidjson::StringBuffer& buf) {
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace cairn::json_writer

#endif  // CAIRN_JSON_WRITER_H_
