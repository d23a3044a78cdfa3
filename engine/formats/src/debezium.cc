// Debezium change events (JSON converter), bare, inside the converter's
// {schema, payload} wrapper, or inside a Kafka {key, value, timestamp,
// offset} envelope; one record per line.
//
//   position.timestamp  source.ts_us, else source.ts_ns / 1000, else
//                       source.ts_ms, else the envelope timestamp (ms), else
//                       the envelope's own ts_us / ts_ms
//   position.tick       source.lsn (Postgres), source.pos (MySQL binlog),
//                       source.scn (Oracle), else the envelope offset, else 0
//   collection          source_map["schema.table"], source_map["table"],
//                       source.table, else the default collection
//   ops                 c, r (snapshot), u -> upsert of `after`; d -> delete;
//                       t -> truncate. A Kafka tombstone (value null) that
//                       follows a delete is skipped.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"
#include "kafka.h"

namespace cairn::formats {
namespace {

absl::StatusOr<Position> ReadPosition(const Value& event, const Value* source,
                                      const KafkaEnvelope& env) {
  Position p;
  const Value* v = nullptr;
  if (source && (v = Member(*source, "ts_us"))) {
    CAIRN_ASSIGN_OR_RETURN(p.timestamp, ReadTimestamp(*v, EpochUnit::kMicros, "source.ts_us"));
  } else if (source && (v = Member(*source, "ts_ns"))) {
    CAIRN_ASSIGN_OR_RETURN(uint64_t ns, ReadU64(*v, "source.ts_ns"));
    p.timestamp = ns / 1000;
  } else if (source && (v = Member(*source, "ts_ms"))) {
    CAIRN_ASSIGN_OR_RETURN(p.timestamp, ReadTimestamp(*v, EpochUnit::kMillis, "source.ts_ms"));
  } else if (env.timestamp) {
    CAIRN_ASSIGN_OR_RETURN(p.timestamp,
                           ReadTimestamp(*env.timestamp, EpochUnit::kMillis, "timestamp"));
  } else if ((v = Member(event, "ts_us"))) {
    CAIRN_ASSIGN_OR_RETURN(p.timestamp, ReadTimestamp(*v, EpochUnit::kMicros, "ts_us"));
  } else if ((v = Member(event, "ts_ms"))) {
    CAIRN_ASSIGN_OR_RETURN(p.timestamp, ReadTimestamp(*v, EpochUnit::kMillis, "ts_ms"));
  } else {
    return FieldError("source.ts_ms",
                      "missing: no source.ts_us/ts_ms, envelope timestamp or ts_ms gives the "
                      "event's time");
  }
  if (source) {
    for (const char* f : {"lsn", "pos", "scn"}) {
      if ((v = Member(*source, f))) {
        CAIRN_ASSIGN_OR_RETURN(p.tick, ReadU64(*v, absl::StrCat("source.", f)));
        return p;
      }
    }
  }
  if (env.offset) {
    CAIRN_ASSIGN_OR_RETURN(p.tick, ReadU64(*env.offset, "offset"));
  }
  return p;
}

absl::StatusOr<std::string> ReadCollection(const Context& ctx, const Value* source) {
  if (!ctx.options.force_collection.empty()) return ctx.options.force_collection;
  const Value* table = source ? Member(*source, "table") : nullptr;
  if (table == nullptr) return ResolveCollection(ctx, "", "source.table");
  if (!IsText(*table) || table->GetStringLength() == 0) {
    return FieldError("source.table", "must be a non-empty string");
  }
  if (const Value* schema = Member(*source, "schema"); schema && IsText(*schema)) {
    auto it = ctx.source.collection_map.find(
        absl::StrCat(AbslView(Text(*schema)), ".", AbslView(Text(*table))));
    if (it != ctx.source.collection_map.end()) return it->second;
  }
  return ResolveCollection(ctx, Text(*table), "source.table");
}
}  // namespace

// Appends the event of one record (none for a tombstone).
absl::Status DecodeDebeziumRecord(const Context& ctx, std::string_view text,
                                  std::vector<Event>* out) {
  CAIRN_ASSIGN_OR_RETURN(json::Document doc, ParseObject(text));
  KafkaEnvelope env;
  CAIRN_ASSIGN_OR_RETURN(const Value* event,
                         UnwrapKafkaEnvelope(doc, "op", "a Debezium event object", &env));
  if (event == nullptr) return absl::OkStatus();  // tombstone
  if (event->HasMember("schema") && event->HasMember("payload")) {
    event = Member(*event, "payload");
    if (event == nullptr) return absl::OkStatus();  // tombstone in the wrapper
    if (!event->IsObject()) return FieldError("payload", "must be a Debezium event object");
  }
  const Value* op = Member(*event, "op");
  if (op == nullptr || !IsText(*op)) {
    return FieldError("op", "missing or not a string; expected c, r, u, d or t");
  }
  std::string_view op_text = Text(*op);
  const Value* source = Member(*event, "source");
  if (source && !source->IsObject()) return FieldError("source", "must be an object");

  Event e;
  e.source = ctx.source.name;
  CAIRN_ASSIGN_OR_RETURN(e.collection, ReadCollection(ctx, source));
  CAIRN_ASSIGN_OR_RETURN(e.position, ReadPosition(*event, source, env));
  e.raw = std::string(text);

  const Value* before = Member(*event, "before");
  const Value* after = Member(*event, "after");
  if (before && !before->IsObject()) return FieldError("before", "must be an object or null");
  if (after && !after->IsObject()) return FieldError("after", "must be an object or null");
  auto key_from = [&](const Value* image, const char* image_name) {
    return ChangeRecordKey(ctx, env, e.collection, ConfiguredKeyFields(ctx, e.collection), image,
                           image_name, "key", "");
  };

  if (op_text == "c" || op_text == "r" || op_text == "u") {
    if (after == nullptr) {
      return FieldError("after",
                        absl::StrCat("is null; op '", AbslView(op_text), "' needs the row"));
    }
    e.op = Op::kUpsert;
    e.snapshot = op_text == "r";
    e.payload = json::Serialize(*after);
    CAIRN_ASSIGN_OR_RETURN(e.key, key_from(after, "after"));
  } else if (op_text == "d") {
    if (env.key == nullptr && before == nullptr) {
      return FieldError("before",
                        "a delete with neither a message key nor a before "
                        "image: no key can be "
                        "found. The source must send keys (REPLICA IDENTITY "
                        "FULL on the table, or "
                        "Kafka message keys)");
    }
    e.op = Op::kDelete;
    CAIRN_ASSIGN_OR_RETURN(e.key, key_from(before, "before"));
  } else if (op_text == "t") {
    e.op = Op::kTruncate;
  } else {
    return FieldError(
        "op", absl::StrCat("unknown op '", AbslView(op_text), "'; expected c, r, u, d or t"));
  }
  out->push_back(std::move(e));
  return absl::OkStatus();
}

}  // namespace cairn::formats
