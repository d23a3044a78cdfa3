// IBM InfoSphere CDC "KCOP basic" records, one per line:
// {key, value, timestamp, offset}. value an object -> upsert of the whole
// row; value null -> delete. timestamp is Kafka's epoch milliseconds (number
// or digit string) or ISO-8601 text; tick = offset. The records name no
// table, so they go to the source's default collection.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {
absl::Status DecodeInfoSphereRecord(const Context& ctx, std::string_view text,
                                    std::vector<Event>* out) {
  CAIRN_ASSIGN_OR_RETURN(json::Document doc, ParseObject(text));
  const Value* key = Member(doc, "key");
  if (key == nullptr) return FieldError("key", "missing or null");
  if (!doc.HasMember("value")) return FieldError("value", "missing (null means delete)");
  const Value* value = Member(doc, "value");
  if (value && !value->IsObject()) return FieldError("value", "must be an object or null");
  const Value* timestamp = Member(doc, "timestamp");
  if (timestamp == nullptr) return FieldError("timestamp", "missing");
  const Value* offset = Member(doc, "offset");
  if (offset == nullptr) return FieldError("offset", "missing");

  Event e;
  e.source = ctx.source.name;
  e.raw = std::string(text);
  CAIRN_ASSIGN_OR_RETURN(e.collection, ResolveCollection(ctx, "", "collection"));
  CAIRN_ASSIGN_OR_RETURN(e.key, KeyFromMessageKey(*key, "key"));
  CAIRN_ASSIGN_OR_RETURN(e.position.timestamp,
                         ReadTimestamp(*timestamp, EpochUnit::kMillis, "timestamp"));
  CAIRN_ASSIGN_OR_RETURN(e.position.tick, ReadU64(*offset, "offset"));
  if (value) {
    e.op = Op::kUpsert;
    e.payload = json::Serialize(*value);
  } else {
    e.op = Op::kDelete;
  }
  out->push_back(std::move(e));
  return absl::OkStatus();
}

}  // namespace cairn::formats
