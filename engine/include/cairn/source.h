// Registered sources and contribution sessions (DESIGN §6).
#ifndef CAIRN_SOURCE_H_
#define CAIRN_SOURCE_H_

#include <map>
#include <string>
#include <vector>

namespace cairn {

// A named producer: its input format and what the format does not carry.
struct SourceDefinition {
  std::string name;
  // debezium | goldengate | infosphere | sse-feed | datapoints | bitbroker |
  // canonical
  std::string format;
  // Key fields per collection, for formats whose records do not carry the key.
  std::map<std::string, std::vector<std::string>> key_fields;
  // Source-side names (GoldenGate `table`, Debezium `source.table`) to
  // collection names.
  std::map<std::string, std::string> collection_map;
  // Collection for records that name none (datapoints, sse without entity).
  std::string default_collection;
  // JSON Schema text per collection, validated against BitBroker `entity`.
  std::map<std::string, std::string> json_schemas;
};

enum class SessionMode {
  kStream,   // each upsert/delete visible as posted
  kAccrue,   // visible only when closed with commit=true
  kReplace,  // on commit=true the session's records become the collection's
             // whole content for the source: earlier records not re-sent are
             // deleted, atomically
  kAtomic,   // whole events (each with its own source position) posted with
             // SessionIngest and applied on commit=true as one batch, all or
             // nothing, whatever its size
};
const char* SessionModeName(SessionMode mode);

// One record posted to a session: `key` is JSON text like Event::key,
// `document` a JSON object.
struct SessionRecord {
  std::string key;
  std::string document;
};

struct SessionInfo {
  std::string id;
  std::string source;
  std::string collection;
  SessionMode mode = SessionMode::kStream;
  uint64_t records = 0;  // records (atomic: events) staged so far
};

}  // namespace cairn

#endif  // CAIRN_SOURCE_H_
