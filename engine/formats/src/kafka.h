// The Kafka-style message envelope `{key, value, timestamp, offset}` that
// Debezium, GoldenGate and InfoSphere records may arrive in, and the key of a
// change record that may come with a message key.
#ifndef CAIRN_ENGINE_FORMATS_SRC_KAFKA_H_
#define CAIRN_ENGINE_FORMATS_SRC_KAFKA_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {

struct KafkaEnvelope {
  const Value* key = nullptr;        // message key; nullptr when absent/null
  const Value* value = nullptr;      // message value; nullptr: tombstone
  const Value* timestamp = nullptr;  // epoch milliseconds (Kafka's unit)
  const Value* offset = nullptr;
};

// Splits `record` when it is an envelope: it has a `value` member, at least
// one of key/timestamp/offset, and not the format's own `marker` field (so a
// bare record with a column named "value" is not mistaken for one). Returns
// false for bare records.
inline bool SplitKafkaEnvelope(const Value& record, const char* marker, KafkaEnvelope* env) {
  if (record.HasMember(marker) || !record.HasMember("value")) return false;
  if (!record.HasMember("key") && !record.HasMember("timestamp") && !record.HasMember("offset")) {
    return false;
  }
  env->key = Member(record, "key");
  env->value = Member(record, "value");
  env->timestamp = Member(record, "timestamp");
  env->offset = Member(record, "offset");
  return true;
}

// The change record in `doc`: the envelope's value when `doc` is an envelope
// (nullptr for a tombstone, which carries nothing to apply), else `doc`.
// `what` names the record in the error for a value that is not an object.
inline absl::StatusOr<const Value*> UnwrapKafkaEnvelope(const Value& doc, const char* marker,
                                                        std::string_view what, KafkaEnvelope* env) {
  if (!SplitKafkaEnvelope(doc, marker, env)) return &doc;
  if (env->value && !env->value->IsObject()) {
    return FieldError("value", absl::StrCat("must be ", AbslView(what), " or null"));
  }
  return env->value;
}

// The key of a change record: the message key when there is one, else
// `fields` (the record's own primary keys or the source's key fields for
// `collection`) read from `image`. With no key fields known, the error names
// `missing_field`, its reason starting with `missing_lead`.
inline absl::StatusOr<std::string> ChangeRecordKey(const Context& ctx, const KafkaEnvelope& env,
                                                   const std::string& collection,
                                                   const std::vector<std::string>* fields,
                                                   const Value* image, const char* image_name,
                                                   std::string_view missing_field,
                                                   std::string_view missing_lead) {
  if (env.key) return KeyFromMessageKey(*env.key, "key");
  if (fields == nullptr) {
    return FieldError(
        missing_field,
        absl::StrCat(AbslView(missing_lead), "the message has no key and source '", ctx.source.name,
                     "' has no key fields for collection '", collection,
                     "' (register them, e.g. --key ", collection, "=id)"));
  }
  if (image == nullptr) {
    return FieldError(image_name, "is null, so the primary key cannot be read");
  }
  return KeyFromFields(*image, image_name, *fields);
}

}  // namespace cairn::formats

#endif  // CAIRN_ENGINE_FORMATS_SRC_KAFKA_H_
