// The JSON text of a change and of an entity: the one shape the layers
// above the engine send them in (cairnd's HTTP API and its Server-Sent
// Events, the sinks' `cairn` shape). Keys, documents, before and after are
// JSON values (null when empty), positions {"timestamp", "tick"}.
#ifndef CAIRN_JSON_H_
#define CAIRN_JSON_H_

#include <string>
#include <string_view>

#include "cairn/event.h"

namespace cairn {

// {"seq", "collection", "key", "op", "before", "after", "position",
// "source"}; with a non-empty `id`, {"id": id, ...} first.
std::string ChangeJson(const Change& c, std::string_view id = {});

// {"collection", "key", "document", "complete", "position", "source", "seq"}
std::string EntityJson(const Entity& e);

}  // namespace cairn

#endif  // CAIRN_JSON_H_
