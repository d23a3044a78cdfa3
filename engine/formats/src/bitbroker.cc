// BitBroker contribution records, posted through sessions: a JSON array of
//   {"id": "<1-64 chars>", "name": "<1-64 chars>", "entity": {...},
//    "instance": {...}}            -> upsert of key "id", document = record
// or a delete list of ids ["GB", "BR"] (one record alone may also be sent as
// an object). `entity` is validated against the collection's JSON Schema when
// the source registers one. Unlike the other formats, every bad record of the
// payload is reported, each as "record N: <field>: <reason>", joined by "; ".
// Positions are left zero: the session assigns them at commit.

// valijson reports an unusable schema by exception (or abort() without
// this); cairn catches it in one place, ParseSchema.
#define VALIJSON_USE_EXCEPTIONS 1
#include <stdexcept>
#include <valijson/adapters/rapidjson_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {
namespace {

constexpr size_t kMaxIdLength = 64;

size_t Utf8Length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

absl::Status CheckName(const Value* v, const char* field) {
  if (v == nullptr || !IsText(*v)) return FieldError(field, "missing or not a string");
  size_t n = Utf8Length(Text(*v));
  if (n == 0 || n > kMaxIdLength) {
    return FieldError(field, absl::StrCat("must be 1 to ", kMaxIdLength, " characters, got ", n));
  }
  return absl::OkStatus();
}

// Parses a JSON Schema text into *schema: first cairn's own checks (bounded
// nesting, no reference cycle without progress: json_schema.cc), then
// valijson's. INVALID_ARGUMENT with the reason.
absl::Status LoadSchema(const std::string& text, valijson::Schema* schema) {
  CAIRN_RETURN_IF_ERROR(CheckJsonSchema(text));
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  if (doc.HasParseError() || !(doc.IsObject() || doc.IsBool()))
    return absl::InvalidArgumentError("not a JSON object");
  // The draft the schema declares ("$schema"); draft-07 when it declares none.
  auto version = valijson::SchemaParser::kDraft7;
  if (doc.IsObject() && doc.HasMember("$schema") && doc["$schema"].IsString()) {
    std::string_view declared = doc["$schema"].GetString();
    if (declared.find("draft-04") != std::string_view::npos) {
      version = valijson::SchemaParser::kDraft4;
    } else if (declared.find("draft-03") != std::string_view::npos) {
      version = valijson::SchemaParser::kDraft3;
    }
  }
  try {
    valijson::SchemaParser parser(version);
    valijson::adapters::RapidJsonAdapter adapter(doc);
    parser.populateSchema(adapter, *schema);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("unusable: ", e.what()));
  }
  return absl::OkStatus();
}

// Parses the collection's JSON Schema, once per payload, into *schema.
// Returns false when the collection has none. A schema stored before the
// registration checks existed is checked here too.
absl::StatusOr<bool> ParseSchema(const Context& ctx, const std::string& collection,
                                 valijson::Schema* schema) {
  auto it = ctx.source.json_schemas.find(collection);
  if (it == ctx.source.json_schemas.end()) return false;
  if (absl::Status s = LoadSchema(it->second, schema); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("source '", ctx.source.name,
                                                      "': the JSON Schema of collection '",
                                                      collection, "' is unusable: ", s.message()));
  }
  return true;
}

// Validates `entity_text` (re-parsed with plain numbers: cairn's documents
// keep numbers as text, which a validator would take for strings).
absl::Status Validate(const valijson::Schema& schema, std::string_view entity_text) {
  rapidjson::Document entity;
  entity.Parse(entity_text.data(), entity_text.size());
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::RapidJsonAdapter adapter(entity);
  if (validator.validate(schema, adapter, &results)) return absl::OkStatus();
  std::vector<std::string> problems;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) {
    std::string path = absl::StrJoin(error.context, "");
    problems.push_back(absl::StrCat(path, " ", error.description));
  }
  return FieldError("entity", absl::StrCat("does not match the collection's JSON Schema: ",
                                           absl::StrJoin(problems, ", ")));
}

absl::Status DecodeRecord(const Context& ctx, const std::string& collection,
                          const valijson::Schema* schema, const Value& r, Event* e) {
  e->source = ctx.source.name;
  e->collection = collection;
  if (IsText(r)) {  // a delete-list entry
    CAIRN_RETURN_IF_ERROR(CheckName(&r, "id"));
    e->op = Op::kDelete;
    e->key = json::Serialize(r);
    e->raw = e->key;
    return absl::OkStatus();
  }
  if (!r.IsObject()) return FieldError("record", "must be an object or, in a delete list, an id");
  const Value* id = Member(r, "id");
  CAIRN_RETURN_IF_ERROR(CheckName(id, "id"));
  CAIRN_RETURN_IF_ERROR(CheckName(Member(r, "name"), "name"));
  const Value* entity = Member(r, "entity");
  if (entity == nullptr || !entity->IsObject()) {
    return FieldError("entity", "missing or not an object");
  }
  if (const Value* instance = Member(r, "instance"); instance && !instance->IsObject()) {
    return FieldError("instance", "must be an object");
  }
  if (schema) CAIRN_RETURN_IF_ERROR(Validate(*schema, json::Serialize(*entity)));
  e->op = Op::kUpsert;
  e->key = json::Serialize(*id);
  e->payload = json::Serialize(r);
  e->raw = e->payload;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Event>> DecodeBitBroker(const Context& ctx, std::string_view payload) {
  auto doc = json::Parse(payload);
  if (!doc.ok()) return RecordError(0, 0, doc.status());
  auto collection = ResolveCollection(ctx, "", "collection");
  if (!collection.ok()) return RecordError(0, 0, collection.status());
  valijson::Schema schema;
  CAIRN_ASSIGN_OR_RETURN(bool has_schema, ParseSchema(ctx, *collection, &schema));

  std::vector<const Value*> records;
  if (doc->IsArray()) {
    for (const Value& r : doc->GetArray()) records.push_back(&r);
  } else {
    records.push_back(&*doc);
  }
  std::vector<Event> out(records.size());
  std::vector<std::string> errors;
  for (size_t i = 0; i < records.size(); ++i) {
    absl::Status s =
        DecodeRecord(ctx, *collection, has_schema ? &schema : nullptr, *records[i], &out[i]);
    if (!s.ok()) errors.push_back(std::string(RecordError(i, 0, s).message()));
  }
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return out;
}

absl::Status ValidateJsonSchema(std::string_view schema_text, std::string_view instance) {
  valijson::Schema schema;
  CAIRN_RETURN_IF_ERROR(LoadSchema(std::string(schema_text), &schema));
  rapidjson::Document doc;
  doc.Parse(instance.data(), instance.size());
  if (doc.HasParseError()) return absl::InvalidArgumentError("the instance is not JSON");
  valijson::Validator validator;
  valijson::ValidationResults results;
  valijson::adapters::RapidJsonAdapter adapter(doc);
  try {
    if (validator.validate(schema, adapter, &results)) return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("the schema is unusable: ", e.what()));
  }
  std::vector<std::string> problems;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) {
    problems.push_back(absl::StrCat(absl::StrJoin(error.context, ""), " ", error.description));
  }
  return absl::InvalidArgumentError(absl::StrJoin(problems, ", "));
}

absl::Status CheckSource(const SourceDefinition& source) {
  for (const auto& [collection, text] : source.json_schemas) {
    valijson::Schema schema;
    if (absl::Status s = LoadSchema(text, &schema); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("source '", source.name, "': json_schemas[",
                                                     collection, "]: ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace cairn::formats
