// Omnia-style timeseries: one JSON document
//   {"data": {"items": [{"id": "<series>", "datapoints":
//       [{"time": "<ISO-8601 or epoch ms>", "value": <number|string|bool|null>,
//         "status": <integer, optional>}]}]}}
// Each point is an upsert of series entity `id` (a string key) in the
// default collection at (time, 0), its document the point itself, so the
// series' History is the timeseries and a repeated identical point is a
// duplicate by identity. Records are numbered by item.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {
namespace {

absl::Status DecodeItem(const Context& ctx, const std::string& collection, const Value& item,
                        std::vector<Event>* out) {
  if (!item.IsObject()) return FieldError("item", "must be an object");
  const Value* id = Member(item, "id");
  if (id == nullptr || !IsText(*id) || id->GetStringLength() == 0) {
    return FieldError("id", "missing or not a non-empty string");
  }
  const Value* points = Member(item, "datapoints");
  if (points == nullptr || !points->IsArray()) {
    return FieldError("datapoints", "missing or not an array");
  }
  std::string key = json::Serialize(*id);
  for (rapidjson::SizeType j = 0; j < points->Size(); ++j) {
    const Value& p = (*points)[j];
    std::string field = absl::StrCat("datapoints[", j, "]");
    if (!p.IsObject()) return FieldError(field, "must be an object");
    const Value* time = Member(p, "time");
    if (time == nullptr) return FieldError(absl::StrCat(field, ".time"), "missing");
    auto it = p.FindMember("value");
    if (it == p.MemberEnd()) return FieldError(absl::StrCat(field, ".value"), "missing");
    if (it->value.IsObject() || it->value.IsArray()) {
      return FieldError(absl::StrCat(field, ".value"), "must be a number, string, boolean or null");
    }
    if (const Value* status = Member(p, "status"); status && !json::IsNumber(*status)) {
      return FieldError(absl::StrCat(field, ".status"), "must be a number");
    }
    Event e;
    e.source = ctx.source.name;
    e.collection = collection;
    e.key = key;
    CAIRN_ASSIGN_OR_RETURN(e.position.timestamp,
                           ReadTimestamp(*time, EpochUnit::kMillis, absl::StrCat(field, ".time")));
    e.op = Op::kUpsert;
    e.payload = json::Serialize(p);
    e.raw = e.payload;
    out->push_back(std::move(e));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Event>> DecodeDatapoints(const Context& ctx, std::string_view payload) {
  auto doc = ParseObject(payload);
  if (!doc.ok()) return RecordError(0, 0, doc.status());
  const Value* data = Member(*doc, "data");
  if (data == nullptr || !data->IsObject()) {
    return RecordError(0, 0, FieldError("data", "missing or not an object"));
  }
  const Value* items = Member(*data, "items");
  if (items == nullptr || !items->IsArray()) {
    return RecordError(0, 0, FieldError("data.items", "missing or not an array"));
  }
  auto collection = ResolveCollection(ctx, "", "collection");
  if (!collection.ok()) return RecordError(0, 0, collection.status());
  std::vector<Event> out;
  for (rapidjson::SizeType i = 0; i < items->Size(); ++i) {
    absl::Status s = DecodeItem(ctx, *collection, (*items)[i], &out);
    if (!s.ok()) return RecordError(i, 0, s);
  }
  return out;
}

}  // namespace cairn::formats
