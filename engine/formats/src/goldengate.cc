// Oracle GoldenGate JSON (one record per line), bare or inside a Kafka
// {key, value, timestamp, offset} envelope.
//
//   position.timestamp  op_ts ("2020-05-13 15:40:06.000000", UTC)
//   position.tick       pos (digits, leading zeros allowed)
//   collection          collection_map[table], else table
//   key                 message key, else primary_keys (also the misspelled
//                       priamry_keys some producers emit), else the source's
//                       key fields; read from after (before for deletes)
//   ops                 I -> upsert; U -> upsert when the after image is whole
//                       (it has every column of the before image), patch
//                       when it is partial or there is no before image to
//                       tell (GoldenGate's compressed updates carry only the
//                       changed columns); D -> delete; T -> truncate.
//                       The long names INSERT/UPDATE/DELETE/TRUNCATE too.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"
#include "kafka.h"

namespace cairn::formats {
namespace {

absl::StatusOr<std::vector<std::string>> PrimaryKeys(const Value& record) {
  const Value* pk = Member(record, "primary_keys");
  const char* name = "primary_keys";
  if (pk == nullptr) {
    pk = Member(record, "priamry_keys");
    name = "priamry_keys";
  }
  std::vector<std::string> fields;
  if (pk == nullptr) return fields;
  if (!pk->IsArray() || pk->Empty()) return FieldError(name, "must be a non-empty array of names");
  for (const Value& f : pk->GetArray()) {
    if (!IsText(f) || f.GetStringLength() == 0) {
      return FieldError(name, "must hold non-empty column names");
    }
    fields.emplace_back(Text(f));
  }
  return fields;
}

// True when every column of `before` is also in `after`.
bool Whole(const Value& after, const Value& before) {
  for (auto m = before.MemberBegin(); m != before.MemberEnd(); ++m) {
    if (!after.HasMember(m->name)) return false;
  }
  return true;
}

}  // namespace

absl::Status DecodeGoldenGateRecord(const Context& ctx, std::string_view text,
                                    std::vector<Event>* out) {
  CAIRN_ASSIGN_OR_RETURN(json::Document doc, ParseObject(text));
  KafkaEnvelope env;
  CAIRN_ASSIGN_OR_RETURN(const Value* record,
                         UnwrapKafkaEnvelope(doc, "op_type", "a GoldenGate record", &env));
  if (record == nullptr) return absl::OkStatus();  // tombstone
  const Value* table = Member(*record, "table");
  if (table == nullptr || !IsText(*table) || table->GetStringLength() == 0) {
    return FieldError("table", "missing or not a non-empty string");
  }
  const Value* op_type = Member(*record, "op_type");
  if (op_type == nullptr || !IsText(*op_type)) {
    return FieldError("op_type", "missing or not a string; expected I, U, D or T");
  }
  const Value* op_ts = Member(*record, "op_ts");
  if (op_ts == nullptr) return FieldError("op_ts", "missing");
  const Value* pos = Member(*record, "pos");
  if (pos == nullptr) return FieldError("pos", "missing");
  const Value* before = Member(*record, "before");
  const Value* after = Member(*record, "after");
  if (before && !before->IsObject()) return FieldError("before", "must be an object or null");
  if (after && !after->IsObject()) return FieldError("after", "must be an object or null");

  Event e;
  e.source = ctx.source.name;
  e.raw = std::string(text);
  CAIRN_ASSIGN_OR_RETURN(e.collection, ResolveCollection(ctx, Text(*table), "table"));
  CAIRN_ASSIGN_OR_RETURN(e.position.timestamp, ReadTimestamp(*op_ts, EpochUnit::kMicros, "op_ts"));
  CAIRN_ASSIGN_OR_RETURN(e.position.tick, ReadU64(*pos, "pos"));
  CAIRN_ASSIGN_OR_RETURN(std::vector<std::string> pk, PrimaryKeys(*record));

  auto key_from = [&](const Value* image, const char* image_name) {
    return ChangeRecordKey(ctx, env, e.collection,
                           pk.empty() ? ConfiguredKeyFields(ctx, e.collection) : &pk, image,
                           image_name, "primary_keys", "missing, ");
  };

  std::string_view op = Text(*op_type);
  if (op == "I" || op == "INSERT" || op == "U" || op == "UPDATE") {
    if (after == nullptr) return FieldError("after", "is null; inserts and updates need it");
    bool update = op == "U" || op == "UPDATE";
    e.op = update && (before == nullptr || !Whole(*after, *before)) ? Op::kPatch : Op::kUpsert;
    e.payload = json::Serialize(*after);
    CAIRN_ASSIGN_OR_RETURN(e.key, key_from(after, "after"));
  } else if (op == "D" || op == "DELETE") {
    e.op = Op::kDelete;
    CAIRN_ASSIGN_OR_RETURN(e.key, key_from(before, "before"));
  } else if (op == "T" || op == "TRUNCATE") {
    e.op = Op::kTruncate;
  } else {
    return FieldError("op_type",
                      absl::StrCat("unknown op_type '", AbslView(op), "'; expected I, U, D or T"));
  }
  out->push_back(std::move(e));
  return absl::OkStatus();
}

}  // namespace cairn::formats
