// For every decoder, a corpus of malformed inputs (truncated JSON, wrong
// types, missing keys, huge numbers, bad timestamps, bad UTF-8), each
// answered with INVALID_ARGUMENT naming the record and the field, and the
// store left unchanged (the good record before the bad one is not applied).
#include <string>
#include <vector>

#include "format_test_util.h"
#include "gmock/gmock.h"

namespace cairn::formats {
namespace {

using ::testing::HasSubstr;

struct Case {
  std::string input;   // the bad record (or whole payload, for document formats)
  std::string expect;  // a substring of the error message
};

const std::string kBadUtf8 = "\"caf\xC3\x28\"";  // an invalid 2-byte sequence

class MalformedTest : public StoreFixture {
 protected:
  // Decodes `payload` as `source`, expects INVALID_ARGUMENT containing
  // `expect`, and checks that ingesting it changed nothing.
  void ExpectRejected(const SourceDefinition& source, const std::string& payload,
                      const std::string& expect, const std::string& prefix = "") {
    SCOPED_TRACE(payload);
    uint64_t last_seq = store_->LastSeq();
    auto r = Ingest(source, payload);
    ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    std::string message(r.status().message());
    EXPECT_THAT(message, HasSubstr(expect));
    EXPECT_THAT(message, ::testing::StartsWith(prefix));
    EXPECT_EQ(store_->LastSeq(), last_seq);
  }

  // Line formats: a good record, then the bad one as record 1 on line 2.
  void RunLines(const SourceDefinition& source, const std::string& good,
                const std::vector<Case>& cases) {
    ASSERT_GE(cases.size(), 20u);
    auto ok = Decode(source, good);
    ASSERT_TRUE(ok.ok()) << ok.status();
    ASSERT_EQ(ok->size(), 1u);
    for (const Case& c : cases) {
      ExpectRejected(source, good + "\n" + c.input + "\n", c.expect, "record 1: line 2: ");
    }
  }
};

TEST_F(MalformedTest, Debezium) {
  SourceDefinition src{.name = "pg", .format = "debezium", .key_fields = {{"t", {"id"}}}};
  std::string good =
      R"({"op":"c","after":{"id":1,"v":"a"},"source":{"table":"t","ts_ms":1000,"lsn":5}})";
  auto rec = [](const std::string& op, const std::string& after, const std::string& source) {
    return R"({"op":)" + op + R"(,"before":null,"after":)" + after + R"(,"source":)" + source + "}";
  };
  const std::string src_ok = R"({"table":"t","ts_ms":2000,"lsn":6})";
  RunLines(
      src, good,
      {
          {R"({"op":"c","after":{"id":1)", "invalid JSON"},
          {"[1,2]", "not a JSON object"},
          {R"({"after":{"id":2},"source":{"table":"t","ts_ms":1}})", "op: missing"},
          {rec("1", R"({"id":2})", src_ok), "op: missing or not a string"},
          {rec(R"("x")", R"({"id":2})", src_ok), "op: unknown op 'x'"},
          {rec(R"("c")", "[1]", src_ok), "after: must be an object"},
          {rec(R"("c")", "null", src_ok), "after: is null"},
          {rec(R"("u")", R"({"id":2})", R"({"table":"t","lsn":6})"), "source.ts_ms: missing"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"t","ts_ms":"yesterday","lsn":6})"),
           "source.ts_ms: 'yesterday' is not an ISO-8601 timestamp"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"t","ts_ms":99999999999999999999})"),
           "source.ts_ms: '99999999999999999999' does not fit in 64 bits"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"t","ts_ms":18446744073709552})"),
           "source.ts_ms: 18446744073709552 is out of range as a timestamp"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"t","ts_ms":-5})"),
           "source.ts_ms: '-5' is not an unsigned integer"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"t","ts_ms":1,"lsn":1e30})"),
           "source.lsn: '1e30' is not an unsigned integer"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"t","ts_ms":1,"lsn":1.5})"),
           "source.lsn: '1.5' is not an unsigned integer"},
          {rec(R"("c")", R"({"id":2})", R"("pg")"), "source: must be an object"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"","ts_ms":1})"),
           "source.table: must be a non-empty string"},
          {rec(R"("c")", R"({"v":2})", src_ok), "after.id: key field is missing or null"},
          {rec(R"("c")", R"({"id":{"a":1}})", src_ok),
           "after.id: key field must be a string, number or boolean"},
          {rec(R"("d")", "null", src_ok),
           "before: a delete with neither a message key nor a before"},
          {rec(R"("c")", R"({"id":2})", R"({"table":"other","ts_ms":1})"),
           "key: the message has no key and source 'pg' has no key fields for "
           "collection 'other'"},
          {rec(R"("c")", R"({"id":2,"v":)" + kBadUtf8 + "}", src_ok), "Invalid encoding in string"},
          {R"({"key":1,"value":5})", "value: must be a Debezium event object or null"},
          {R"({"key":[1],"value":)" + rec(R"("c")", R"({"id":2})", src_ok) + "}",
           "key: must be an object or a scalar"},
          {rec(R"("c")", R"({"id":2})", R"({"ts_ms":1})"),
           "source.table: the record names no collection and source 'pg' has "
           "no default"},
          {R"({"schema":{},"payload":"x"})", "payload: must be a Debezium event object"},
      });
}

TEST_F(MalformedTest, GoldenGate) {
  SourceDefinition src{.name = "ogg", .format = "goldengate"};
  auto rec = [](const std::string& fields) {
    return R"({"table":"T","op_type":"I","op_ts":"2020-05-13 15:40:06.000000","pos":"002",)" +
           fields + "}";
  };
  const std::string good =
      R"({"table":"T","op_type":"I","op_ts":"2020-05-13 15:40:06.000000","pos":"001","primary_keys":["id"],"after":{"id":1}})";
  RunLines(
      src, good,
      {
          {R"({"table":"T","op_type":"I","op_ts":)", "invalid JSON"},
          {R"("text")", "not a JSON object"},
          {R"({"op_type":"I","op_ts":"2020-05-13 15:40:06","pos":"1","after":{"id":1}})",
           "table: missing"},
          {R"({"table":7,"op_type":"I","op_ts":"2020-05-13 15:40:06","pos":"1"})",
           "table: missing or not"},
          {R"({"table":"T","op_ts":"2020-05-13 15:40:06","pos":"1","after":{"id":1}})",
           "op_type: missing"},
          {R"({"table":"T","op_type":"X","op_ts":"2020-05-13 15:40:06","pos":"1","primary_keys":["id"],"after":{"id":1}})",
           "op_type: unknown op_type 'X'"},
          {R"({"table":"T","op_type":"I","pos":"1","after":{"id":1}})", "op_ts: missing"},
          {R"({"table":"T","op_type":"I","op_ts":"2020-13-45 99:00:00","pos":"1","after":{"id":1}})",
           "op_ts: '2020-13-45 99:00:00' is not an ISO-8601 timestamp"},
          {R"({"table":"T","op_type":"I","op_ts":"1960-01-01 00:00:00","pos":"1","after":{"id":1}})",
           "op_ts: '1960-01-01 00:00:00' is before 1970"},
          {R"({"table":"T","op_type":"I","op_ts":"2020-05-13 15:40:06","after":{"id":1}})",
           "pos: missing"},
          {R"({"table":"T","op_type":"I","op_ts":"2020-05-13 15:40:06","pos":"12a","primary_keys":["id"],"after":{"id":1}})",
           "pos: '12a' is not an unsigned integer"},
          {R"({"table":"T","op_type":"I","op_ts":"2020-05-13 15:40:06","pos":"999999999999999999999999","primary_keys":["id"],"after":{"id":1}})",
           "pos: '999999999999999999999999' does not fit in 64 bits"},
          {rec(R"("primary_keys":"id","after":{"id":1})"),
           "primary_keys: must be a non-empty array"},
          {rec(R"("primary_keys":[],"after":{"id":1})"), "primary_keys: must be a non-empty array"},
          {rec(R"("primary_keys":[1],"after":{"id":1})"),
           "primary_keys: must hold non-empty column names"},
          {rec(R"("primary_keys":["id"],"after":{"v":1})"),
           "after.id: key field is missing or null"},
          {rec(R"("primary_keys":["id"],"after":null)"), "after: is null"},
          {R"({"table":"T","op_type":"D","op_ts":"2020-05-13 15:40:06","pos":"3","primary_keys":["id"],"before":null})",
           "before: is null, so the primary key cannot be read"},
          {rec(R"("primary_keys":["id"],"after":"row")"), "after: must be an object or null"},
          {rec(R"("after":{"id":1})"), "primary_keys: missing, the message has no key"},
          {rec(R"("primary_keys":["id"],"after":{"id":)" + kBadUtf8 + "}"),
           "Invalid encoding in string"},
          {R"({"key":{"id":1},"value":[1],"offset":1})",
           "value: must be a GoldenGate record or null"},
          {R"({"key":{"a":[1],"b":2},"value":)" + rec(R"("after":{"id":1})") + "}",
           "key.a: key fields must be strings, numbers or booleans"},
          {rec(R"("priamry_keys":["id"],"after":{"id":1},"before":7)"),
           "before: must be an object"},
      });
}

TEST_F(MalformedTest, InfoSphere) {
  SourceDefinition src{.name = "iis", .format = "infosphere", .default_collection = "users"};
  std::string good = R"({"key":{"id":1},"value":{"a":1},"timestamp":"1000","offset":"1"})";
  auto rec = [](const std::string& key, const std::string& value, const std::string& ts,
                const std::string& offset) {
    return R"({"key":)" + key + R"(,"value":)" + value + R"(,"timestamp":)" + ts + R"(,"offset":)" +
           offset + "}";
  };
  RunLines(src, good,
           {
               {R"({"key":{"id":1},"value":{"a")", "invalid JSON"},
               {"42", "not a JSON object"},
               {R"({"value":{"a":1},"timestamp":"1","offset":"2"})", "key: missing or null"},
               {rec("null", "{}", "1", "2"), "key: missing or null"},
               {rec("{}", "{}", "1", "2"), "key: is an empty object"},
               {rec("[1]", "{}", "1", "2"), "key: must be an object or a scalar"},
               {R"({"key":1,"timestamp":"1","offset":"2"})", "value: missing (null means delete)"},
               {rec("1", "[1]", "1", "2"), "value: must be an object or null"},
               {rec("1", R"("row")", "1", "2"), "value: must be an object or null"},
               {R"({"key":1,"value":{},"offset":"2"})", "timestamp: missing"},
               {rec("1", "{}", "true", "2"), "timestamp: must be an ISO-8601 string or an integer"},
               {rec("1", "{}", R"("soon")", "2"), "timestamp: 'soon' is not an ISO-8601 timestamp"},
               {rec("1", "{}", R"("123456789012345678901234")", "2"),
                "timestamp: '123456789012345678901234' does not fit in 64 bits"},
               {rec("1", "{}", "-1", "2"), "timestamp: '-1' is not an unsigned integer"},
               {rec("1", "{}", "1.5", "2"), "timestamp: '1.5' is not an unsigned integer"},
               {R"({"key":1,"value":{},"timestamp":"1"})", "offset: missing"},
               {rec("1", "{}", "1", R"("-1")"), "offset: '-1' is not an unsigned integer"},
               {rec("1", "{}", "1", "184467440737095516150"),
                "offset: '184467440737095516150' does not fit"},
               {rec("1", "{}", "1", R"({"o":1})"), "offset: must be an unsigned integer"},
               {rec("1", R"({"a":)" + kBadUtf8 + "}", "1", "2"), "Invalid encoding in string"},
               {rec(R"({"a":{"b":1}})", "{}", "1", "2"), "key.a: key fields must be strings"},
               {rec("1", "{}", R"("2021-02-30T00:00:00Z")", "2"),
                "timestamp: '2021-02-30T00:00:00Z' is not"},
           });
  SourceDefinition no_default{.name = "iis2", .format = "infosphere"};
  ExpectRejected(no_default, good, "record 0: line 1: collection: the record names no collection");
}

TEST_F(MalformedTest, SseFeed) {
  SourceDefinition src{.name = "billing", .format = "sse-feed"};
  std::string good =
      "event: load\n"
      R"(data: {"entity":"account","key":{"acct_no":1},"timestamp":"2026-11-20T10:00:00Z","tick":1})"
      "\n"
      R"(data: {"acct_no":1})"
      "\n\n";
  auto ev = [](const std::string& type, const std::string& header, const std::string& body) {
    return "event: " + type + "\ndata: " + header + "\ndata: " + body + "\n\n";
  };
  const std::string h =
      R"({"entity":"account","key":2,"timestamp":"2026-11-20T10:00:01Z","tick":2})";
  std::vector<Case> cases = {
      {ev("upsert", h, "{}"), "event: unknown event type 'upsert'"},
      {"data: " + h + "\ndata: {}\n\n", "event: unknown event type ''"},
      {"event: create\ndata: " + h + "\n\n", "data: expected 2 data lines (header, body), got 1"},
      {"event: create\ndata: " + h + "\ndata: {}\ndata: {}\n\n", "got 3"},
      {ev("create", R"({"entity":"account","key":2,)", "{}"), "header: invalid JSON"},
      {ev("create", "[1]", "{}"), "header: not a JSON object"},
      {ev("create", R"({"entity":5,"key":2,"timestamp":1,"tick":2})", "{}"),
       "header.entity: must be a string"},
      {ev("create", R"({"entity":"account","timestamp":1,"tick":2})", "{}"), "header.key: missing"},
      {ev("create", R"({"entity":"account","key":[2],"timestamp":1,"tick":2})", "{}"),
       "header.key: must be an object or a scalar"},
      {ev("create", R"({"entity":"account","key":{},"timestamp":1,"tick":2})", "{}"),
       "header.key: is an empty object"},
      {ev("create", R"({"entity":"account","key":2,"tick":2})", "{}"), "header.timestamp: missing"},
      {ev("create", R"({"entity":"account","key":2,"timestamp":"noon","tick":2})", "{}"),
       "header.timestamp: 'noon' is not an ISO-8601 timestamp"},
      {ev("create", R"({"entity":"account","key":2,"timestamp":false,"tick":2})", "{}"),
       "header.timestamp: must be an ISO-8601 string or an integer"},
      {ev("create", R"({"entity":"account","key":2,"timestamp":99999999999999999999,"tick":2})",
          "{}"),
       "header.timestamp: '99999999999999999999' does not fit in 64 bits"},
      {ev("create", R"({"entity":"account","key":2,"timestamp":1})", "{}"), "header.tick: missing"},
      {ev("create", R"({"entity":"account","key":2,"timestamp":1,"tick":-2})", "{}"),
       "header.tick: '-2' is not an unsigned integer"},
      {ev("create", R"({"entity":"account","key":2,"timestamp":1,"tick":123456789012345678901})",
          "{}"),
       "header.tick: '123456789012345678901' does not fit in 64 bits"},
      {ev("create", h, R"({"a":)"), "body: invalid JSON"},
      {ev("create", h, "[1]"), "body: not a JSON object"},
      {ev("update", h, R"("x")"), "body: not a JSON object"},
      {ev("create", h, R"({"a":)" + kBadUtf8 + "}"), "body: invalid JSON"},
      {ev("create", R"({"entity":)" + kBadUtf8 + R"(,"key":2,"timestamp":1,"tick":2})", "{}"),
       "header: invalid JSON"},
      {ev("create", R"({"key":2,"timestamp":1,"tick":2})", "{}"),
       "header.entity: the record names no collection"},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const Case& c : cases) {
    // The bad event is record 1 and starts on line 5.
    ExpectRejected(src, good + c.input, c.expect, "record 1: line 5: ");
  }
}

TEST_F(MalformedTest, Datapoints) {
  SourceDefinition src{.name = "plant", .format = "datapoints", .default_collection = "series"};
  const std::string good_item =
      R"({"id":"s1","datapoints":[{"time":"2018-11-30T10:00:00Z","value":1,"status":192}]})";
  auto doc = [&](const std::string& bad_item) {
    return R"({"data":{"items":[)" + good_item + "," + bad_item + "]}}";
  };
  auto point = [](const std::string& p) { return R"({"id":"s2","datapoints":[)" + p + "]}"; };
  std::vector<Case> cases = {
      {R"({"data":{"items":[)", "record 0: invalid JSON"},
      {"[]", "record 0: not a JSON object"},
      {R"({"items":[]})", "record 0: data: missing or not an object"},
      {R"({"data":[1]})", "record 0: data: missing or not an object"},
      {R"({"data":{}})", "record 0: data.items: missing or not an array"},
      {R"({"data":{"items":{}}})", "record 0: data.items: missing or not an array"},
      {doc(R"("s2")"), "record 1: item: must be an object"},
      {doc(R"({"datapoints":[]})"), "record 1: id: missing or not a non-empty string"},
      {doc(R"({"id":7,"datapoints":[]})"), "record 1: id: missing or not a non-empty string"},
      {doc(R"({"id":"","datapoints":[]})"), "record 1: id: missing or not a non-empty string"},
      {doc(R"({"id":"s2"})"), "record 1: datapoints: missing or not an array"},
      {doc(R"({"id":"s2","datapoints":{}})"), "record 1: datapoints: missing or not an array"},
      {doc(point("5")), "record 1: datapoints[0]: must be an object"},
      {doc(point(R"({"value":1})")), "record 1: datapoints[0].time: missing"},
      {doc(point(R"({"time":"30/11/2018","value":1})")),
       "record 1: datapoints[0].time: '30/11/2018' is not an ISO-8601 "
       "timestamp"},
      {doc(point(R"({"time":true,"value":1})")),
       "record 1: datapoints[0].time: must be an ISO-8601 string or an "
       "integer"},
      {doc(point(R"({"time":99999999999999999999,"value":1})")),
       "record 1: datapoints[0].time: '99999999999999999999' does not fit in "
       "64 bits"},
      {doc(point(R"({"time":1,"value":1},{"time":-1,"value":1})")),
       "record 1: datapoints[1].time: '-1' is not an unsigned integer"},
      {doc(point(R"({"time":1})")), "record 1: datapoints[0].value: missing"},
      {doc(point(R"({"time":1,"value":{"v":1}})")),
       "record 1: datapoints[0].value: must be a number, string, boolean or "
       "null"},
      {doc(point(R"({"time":1,"value":1,"status":"good"})")),
       "record 1: datapoints[0].status: must be a number"},
      {doc(point(R"({"time":1,"value":)" + kBadUtf8 + "}")), "record 0: invalid JSON"},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const Case& c : cases) ExpectRejected(src, c.input, c.expect);
  SourceDefinition no_default{.name = "plant2", .format = "datapoints"};
  ExpectRejected(no_default, doc(good_item),
                 "record 0: collection: the record names no collection");
}

TEST_F(MalformedTest, BitBroker) {
  SourceDefinition src{.name = "contrib",
                       .format = "bitbroker",
                       .default_collection = "countries",
                       .json_schemas = {{"countries", R"({"type":"object","required":["code"]})"}}};
  const std::string good = R"({"id":"GB","name":"United Kingdom","entity":{"code":"GB"}})";
  auto list = [&](const std::string& bad) { return "[" + good + "," + bad + "]"; };
  const std::string long_text(65, 'x');
  std::vector<Case> cases = {
      {"[" + good + ",{\"id\":", "record 0: invalid JSON"},
      {"42", "record 0: record: must be an object or, in a delete list, an id"},
      {list("5"), "record 1: record: must be an object"},
      {list("null"), "record 1: record: must be an object"},
      {list("[1]"), "record 1: record: must be an object"},
      {list(R"({"name":"X","entity":{"code":"X"}})"), "record 1: id: missing or not a string"},
      {list(R"({"id":5,"name":"X","entity":{"code":"X"}})"),
       "record 1: id: missing or not a string"},
      {list(R"({"id":"","name":"X","entity":{"code":"X"}})"),
       "record 1: id: must be 1 to 64 characters, got 0"},
      {list(R"({"id":")" + long_text + R"(","name":"X","entity":{"code":"X"}})"),
       "record 1: id: must be 1 to 64 characters, got 65"},
      {list(R"({"id":"X","entity":{"code":"X"}})"), "record 1: name: missing or not a string"},
      {list(R"({"id":"X","name":null,"entity":{"code":"X"}})"), "record 1: name: missing"},
      {list(R"({"id":"X","name":")" + long_text + R"(","entity":{"code":"X"}})"),
       "record 1: name: must be 1 to 64 characters, got 65"},
      {list(R"({"id":"X","name":"X"})"), "record 1: entity: missing or not an object"},
      {list(R"({"id":"X","name":"X","entity":[1]})"), "record 1: entity: missing or not an object"},
      {list(R"({"id":"X","name":"X","entity":"x"})"), "record 1: entity: missing or not an object"},
      {list(R"({"id":"X","name":"X","entity":{"code":"X"},"instance":"i"})"),
       "record 1: instance: must be an object"},
      {list(R"({"id":"X","name":"X","entity":{"area":1}})"),
       "record 1: entity: does not match the collection's JSON Schema"},
      {R"(["GB",""])", "record 1: id: must be 1 to 64 characters, got 0"},
      {R"(["GB",")" + long_text + R"("])", "record 1: id: must be 1 to 64 characters, got 65"},
      {R"(["GB",7])", "record 1: record: must be an object or, in a delete list, an id"},
      {list(R"({"id":)" + kBadUtf8 + "}"), "record 0: invalid JSON"},
      {list(R"({"id":"","name":"X","entity":{"code":"X"}},{"id":"Y","name":"","entity":{}})"),
       "record 1: id: must be 1 to 64 characters, got 0; record 2: name:"},
  };
  ASSERT_GE(cases.size(), 20u);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.input);
    auto r = Decode(src, c.input);
    ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.expect));
  }
  // An unusable schema is the source's problem, named as such.
  SourceDefinition broken = src;
  broken.json_schemas["countries"] = R"({"type":"no-such-type"})";
  auto r = Decode(broken, list(R"("FR")"));
  EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("JSON Schema of collection 'countries'"));
}

// A schema whose references loop back without descending into the
// instance made validation recurse until the stack ran out: CheckSource
// refuses it at registration, and Decode refuses it before use.
TEST_F(MalformedTest, JsonSchemaReferenceCycles) {
  auto source = [](std::string schema) {
    return SourceDefinition{
        .name = "f3", .format = "bitbroker", .json_schemas = {{"c", std::move(schema)}}};
  };
  const std::vector<std::string> cyclic = {
      R"({"$ref":"#"})",
      R"({"allOf":[{"type":"object"},{"$ref":"#"}]})",
      R"({"anyOf":[{"not":{"$ref":"#"}}]})",
      R"({"if":{"$ref":"#/definitions/a"},"definitions":{"a":{"then":{"$ref":"#"}}}})",
      R"({"dependencies":{"x":{"$ref":"#"}}})",
      R"({"definitions":{"a":{"$ref":"#/definitions/b"},"b":{"oneOf":[{"$ref":"#/definitions/a"}]}},)"
      R"("properties":{"p":{"$ref":"#/definitions/a"}}})",
  };
  for (const std::string& schema : cyclic) {
    SCOPED_TRACE(schema);
    absl::Status s = CheckSource(source(schema));
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("json_schemas[c]: references loop back"));
    auto r =
        Decode(source(schema), R"([{"id":"GB","name":"x","entity":{"a":1}}])", {.collection = "c"});
    EXPECT_TRUE(absl::IsFailedPrecondition(r.status())) << r.status();
  }
  for (const auto& [schema, why] : std::vector<std::pair<std::string, std::string>>{
           {R"({"$ref":"other.json#"})", "is not local"},
           {R"({"$ref":"#/definitions/none"})", "points to no schema"},
           {R"({"$ref":7})", "$ref must be a string"},
           {R"({"type":"no-such-type"})", "unusable"},
           {"[1]", "not a JSON object"}}) {
    SCOPED_TRACE(schema);
    EXPECT_THAT(std::string(CheckSource(source(schema)).message()), HasSubstr(why));
  }
  // Recursion that descends into the instance is bounded by the document's
  // depth, which json::Parse bounds: accepted, and it validates.
  SourceDefinition tree = source(
      R"({"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#"}},)"
      R"("n":{"allOf":[{"$ref":"#/definitions/num"}]}},"definitions":{"num":{"type":"integer"}}})");
  ASSERT_TRUE(CheckSource(tree).ok()) << CheckSource(tree);
  std::string deep = R"({"children":[)";
  for (int i = 0; i < 200; ++i) deep += R"({"children":[)";
  deep += R"({"n":"x"})";
  for (int i = 0; i < 200; ++i) deep += "]}";
  deep += "]}";
  auto r = Decode(tree, R"([{"id":"GB","name":"x","entity":)" + deep + "}]", {.collection = "c"});
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("JSON Schema"));
}

TEST_F(MalformedTest, Canonical) {
  SourceDefinition src{.name = "app", .format = "canonical"};
  std::string good =
      R"({"collection":"c","key":1,"op":"upsert","position":{"timestamp":1,"tick":0},"payload":{"a":1}})";
  auto rec = [](const std::string& fields) { return "{" + fields + "}"; };
  const std::string pos = R"("position":{"timestamp":5,"tick":1})";
  RunLines(
      src, good,
      {
          {R"({"collection":"c","key":)", "invalid JSON"},
          {"true", "not a JSON object"},
          {rec(R"("collection":"c","key":1,)" + pos), "op: missing"},
          {rec(R"("collection":"c","key":1,"op":"merge",)" + pos), "op: unknown op 'merge'"},
          {rec(R"("collection":"c","key":1,"op":2,)" + pos), "op: missing or not a string"},
          {rec(R"("collection":"c","key":1,"op":"delete","position":{"tick":1})"),
           "position.timestamp: missing"},
          {rec(R"("collection":"c","key":1,"op":"delete","position":"now")"),
           "position: must be an object"},
          {rec(R"("collection":"c","key":1,"op":"delete","position":{"timestamp":"later"})"),
           "position.timestamp: 'later' is not an ISO-8601 timestamp"},
          {rec(R"("collection":"c","key":1,"op":"delete","position":{"timestamp":1,"tick":-1})"),
           "position.tick: '-1' is not an unsigned integer"},
          {rec(R"("collection":"c","key":1,"op":"delete","position":{"timestamp":1,"tick":1e99})"),
           "position.tick: '1e99' is not an unsigned integer"},
          {rec(R"("collection":"c","op":"delete",)" + pos), "key: missing"},
          {rec(R"("collection":"c","key":[1],"op":"delete",)" + pos),
           "key: must be an object or a scalar"},
          {rec(R"("collection":"c","key":1,"op":"upsert",)" + pos),
           "payload: must be an object for upsert"},
          {rec(R"("collection":"c","key":1,"op":"patch","payload":[1],)" + pos),
           "payload: must be an object for patch"},
          {rec(R"("collection":"c","key":1,"op":"delete","snapshot":"yes",)" + pos),
           "snapshot: must be a boolean"},
          {rec(R"("collection":"c","key":1,"op":"delete","event_id":7,)" + pos),
           "event_id: must be a string"},
          {rec(R"("source":"other","collection":"c","key":1,"op":"delete",)" + pos),
           "source: names another source than 'app'"},
          {rec(R"("collection":9,"key":1,"op":"delete",)" + pos), "collection: must be a string"},
          {rec(R"("key":1,"op":"delete",)" + pos), "collection: the record names no collection"},
          {rec(R"("collection":)" + kBadUtf8 + R"(,"key":1,"op":"delete",)" + pos),
           "Invalid encoding in string"},
          {rec(R"("collection":"c","key":1,"op":"delete","timestamp":99999999999999999999)"),
           "position.timestamp: '99999999999999999999' does not fit in 64 "
           "bits"},
      });
  // A decodable event the store refuses (empty key, position overflow) is
  // still rejected as a whole batch, by the store's validation.
  ExpectRejected(src, good + "\n" + rec(R"("collection":"c","key":"","op":"delete",)" + pos),
                 "event 1:");
  ExpectRejected(
      src,
      good + "\n" +
          rec(R"("collection":"c","key":2,"op":"delete","position":{"timestamp":18446744073709551615})"),
      "event 1: position overflow");
}

}  // namespace
}  // namespace cairn::formats
