// The Kafka-style message envelope `{key, value, timestamp, offset}` that
// Debezium, GoldenGate and InfoSphere records may arrive in.
#ifndef CAIRN_ENGINE_FORMATS_SRC_KAFKA_H_
#define CAIRN_ENGINE_FORMATS_SRC_KAFKA_H_

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
inline bool SplitKafkaEnvelope(const Value& record, const char* marker,
                               KafkaEnvelope* env) {
  if (record.HasMember(marker) || !record.HasMember("value")) return false;
  if (!record.HasMember("key") && !record.HasMember("timestamp") &&
      !record.HasMember("offset")) {
    return false;
  }
  env->key = Member(record, "key");
  env->value = Member(record, "value");
  env->timestamp = Member(record, "timestamp");
  env->offset = Member(record, "offset");
  return true;
}

}  // namespace cairn::formats

#endif  // CAIRN_ENGINE_FORMATS_SRC_KAFKA_H_
