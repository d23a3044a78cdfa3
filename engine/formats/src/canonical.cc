// cairn's own event JSON, one event per line:
//
//   {"collection": "account", "key": 1001 | "A-1" | {"a":1,"b":"x"},
//    "op": "upsert" | "patch" | "delete" | "truncate",
//    "position": {"timestamp": <µs or ISO-8601>, "tick": <u64>},
//    "payload": {...}, "snapshot": false, "event_id": "...",
//    "source": "<the registered source, optional>"}
//
// A flat "timestamp"/"tick" pair may stand in for "position"; tick defaults
// to 0. The payload is required for upsert and patch.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {
namespace {

absl::StatusOr<Op> ReadOp(const Value* v) {
  if (v == nullptr || !IsText(*v)) {
    return FieldError("op", "missing or not a string; expected upsert, patch, delete or truncate");
  }
  std::string_view s = Text(*v);
  for (Op op : {Op::kUpsert, Op::kPatch, Op::kDelete, Op::kTruncate}) {
    if (s == OpName(op)) return op;
  }
  return FieldError("op", absl::StrCat("unknown op '", AbslView(s),
                                       "'; expected upsert, patch, delete or truncate"));
}

}  // namespace

absl::Status DecodeCanonicalRecord(const Context& ctx, std::string_view text,
                                   std::vector<Event>* out) {
  CAIRN_ASSIGN_OR_RETURN(json::Document doc, ParseObject(text));
  Event e;
  e.raw = std::string(text);
  e.source = ctx.source.name;
  if (ctx.options.source_per_record) {
    const Value* s = Member(doc, "source");
    if (s == nullptr) return FieldError("source", "missing");
    if (!IsText(*s)) return FieldError("source", "must be a string");
    e.source = std::string(Text(*s));
  } else if (const Value* s = Member(doc, "source")) {
    if (!IsText(*s) || Text(*s) != ctx.source.name) {
      return FieldError("source", absl::StrCat("names another source than '", ctx.source.name,
                                               "', the one the payload was sent for"));
    }
  }
  const Value* collection = Member(doc, "collection");
  if (collection && !IsText(*collection)) return FieldError("collection", "must be a string");
  CAIRN_ASSIGN_OR_RETURN(e.collection,
                         ResolveCollection(ctx, collection ? Text(*collection) : "", "collection"));
  CAIRN_ASSIGN_OR_RETURN(e.op, ReadOp(Member(doc, "op")));

  const Value* position = Member(doc, "position");
  const Value* holder = &doc;
  if (position) {
    if (!position->IsObject()) return FieldError("position", "must be an object");
    holder = position;
  }
  const Value* ts = Member(*holder, "timestamp");
  if (ts == nullptr) return FieldError("position.timestamp", "missing");
  CAIRN_ASSIGN_OR_RETURN(e.position.timestamp,
                         ReadTimestamp(*ts, EpochUnit::kMicros, "position.timestamp"));
  if (const Value* tick = Member(*holder, "tick")) {
    CAIRN_ASSIGN_OR_RETURN(e.position.tick, ReadU64(*tick, "position.tick"));
  }

  if (e.op != Op::kTruncate) {
    const Value* key = Member(doc, "key");
    if (key == nullptr) return FieldError("key", "missing");
    if (key->IsObject()) {
      e.key = json::Serialize(*key);  // composite keys stay objects, as sent
    } else {
      CAIRN_ASSIGN_OR_RETURN(e.key, KeyFromMessageKey(*key, "key"));
    }
  }
  if (e.op == Op::kUpsert || e.op == Op::kPatch) {
    const Value* payload = Member(doc, "payload");
    if (payload == nullptr || !payload->IsObject()) {
      return FieldError("payload", absl::StrCat("must be an object for ", OpName(e.op)));
    }
    e.payload = json::Serialize(*payload);
  }
  if (const Value* snapshot = Member(doc, "snapshot")) {
    if (!snapshot->IsBool()) return FieldError("snapshot", "must be a boolean");
    e.snapshot = snapshot->GetBool();
  }
  if (const Value* id = Member(doc, "event_id")) {
    if (!IsText(*id)) return FieldError("event_id", "must be a string");
    e.event_id = std::string(Text(*id));
  }
  out->push_back(std::move(e));
  return absl::OkStatus();
}

}  // namespace cairn::formats
