// A connector's definition: JSON round trip, and every bound an error naming
// its field.
#include <string>

#include "cairn/connectors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cairn::connectors {
namespace {

using ::testing::HasSubstr;

ConnectorDefinition Aria() {
  return {.name = "aria",
          .source = "billing",
          .urls = {"https://aria.example/load", "https://aria.example/change"},
          .headers = {{"Authorization", "Bearer x"}},
          .ca_file = "/etc/ssl/aria.pem",
          .retention = absl::Hours(48),
          .batch_events = 500,
          .batch_time = absl::Milliseconds(20),
          .durable = true,
          .on_error = OnError::kSkip,
          .initial_backoff = absl::Milliseconds(50),
          .max_backoff = absl::Seconds(5),
          .idle_timeout = absl::Seconds(30)};
}

TEST(ConnectorDefinitionTest, JsonRoundTrip) {
  ConnectorDefinition d = Aria();
  auto back = FromJson(ToJson(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ToJson(*back), ToJson(d));
  EXPECT_EQ(back->urls, d.urls);
  EXPECT_EQ(back->headers, d.headers);
  EXPECT_EQ(back->retention, absl::Hours(48));
  EXPECT_EQ(back->on_error, OnError::kSkip);
  EXPECT_EQ(back->batch_time, absl::Milliseconds(20));
  // Absent fields take the defaults.
  auto minimal = FromJson(R"({"name":"a","source":"s","urls":["http://h/f"]})");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ(minimal->type, "sse");
  EXPECT_EQ(minimal->batch_events, 1000u);
  EXPECT_EQ(minimal->on_error, OnError::kStop);
  EXPECT_EQ(minimal->retention, absl::ZeroDuration());
}

TEST(ConnectorDefinitionTest, ErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* words;
  } cases[] = {
      {"[1]", "must be an object"},
      {"{", "is not JSON"},
      {R"({"name":"a","source":"s","urls":["http://h"],"colour":1})", "colour: is not a field"},
      {R"({"name":"a","source":"s","urls":"http://h"})", "urls: must be an array"},
      {R"({"name":"a","source":"s","urls":["http://h"],"on_error":"ignore"})",
       "on_error: must be stop or skip"},
      {R"({"name":"a","source":"s","urls":["http://h"],"batch_events":0})",
       "batch_events: must be at least 1"},
      {R"({"name":"a","source":"s","urls":["http://h"],"batch_events":-1})", "batch_events"},
      {R"({"name":"a b","source":"s","urls":["http://h"]})", "name: must be 1 to 128"},
      {R"({"name":"a","source":"s","urls":[]})", "urls: must hold 1 to 16"},
      {R"({"name":"a","source":"s","urls":["file:///etc/passwd"]})", "urls[0]"},
      {R"({"name":"a","source":"s","urls":["http://h","http://h"]})", "urls[1]: repeats"},
      {R"({"name":"a","urls":["http://h"]})", "source: is required"},
      {R"({"name":"a","type":"kafka","source":"s","urls":["http://h"]})", "type"},
      {R"({"name":"a","source":"s","urls":["http://h"],"headers":{"X":"a\r\nB: c"}})",
       "headers[\"X\"]"},
      {R"({"name":"a","source":"s","urls":["http://h"],"initial_backoff_millis":0})",
       "initial_backoff_millis: must be at least 1"},
      {R"({"name":"a","source":"s","urls":["http://h"],"initial_backoff_millis":500,)"
       R"("max_backoff_millis":100})",
       "max_backoff_millis"},
  };
  for (const Case& c : cases) {
    auto d = FromJson(c.json);
    ASSERT_FALSE(d.ok()) << c.json;
    EXPECT_TRUE(absl::IsInvalidArgument(d.status())) << d.status();
    EXPECT_THAT(std::string(d.status().message()), HasSubstr(c.words)) << c.json;
  }
}

TEST(SinkDefinitionTest, JsonRoundTripAndErrors) {
  SinkDefinition d{.name = "hook",
                   .url = "https://hooks.example/cairn",
                   .headers = {{"Authorization", "Bearer y"}},
                   .shape = "debezium",
                   .filter = {.sources = {"app"}, .collections = {"orders"}, .key_prefix = "o-"},
                   .from_seq = 42,
                   .batch_changes = 7};
  auto back = SinkFromJson(SinkToJson(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(SinkToJson(*back), SinkToJson(d));
  EXPECT_EQ(back->filter.collections, d.filter.collections);
  EXPECT_EQ(back->from_seq, 42u);
  struct Case {
    const char* json;
    const char* words;
  } cases[] = {
      {R"({"name":"h","url":"ftp://x"})", "sink url"},
      {R"({"name":"h","url":"http://x","shape":"avro"})", "sink shape"},
      {R"({"name":"h","url":"http://x","type":"kafka"})", "sink type"},
      {R"({"name":"h","url":"http://x","batch_changes":0})", "batch_changes"},
      {R"({"name":"","url":"http://x"})", "sink name"},
      {R"({"name":"h","url":"http://x","collections":[""]})", "collection"},
  };
  for (const Case& c : cases) {
    auto r = SinkFromJson(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.words)) << c.json;
  }
}

TEST(SinkDefinitionTest, TheCairnShapeIsTheChangeRecord) {
  Change c{.seq = 9,
           .collection = "orders",
           .key = R"("o-1")",
           .op = Op::kPatch,
           .before = R"({"n":1})",
           .after = R"({"n":2})",
           .position = {1700000000000000, 3},
           .source = "app"};
  EXPECT_EQ(RenderChange("cairn", "hook", c),
            R"({"id":"hook-9","seq":9,"collection":"orders","key":"o-1","op":"patch",)"
            R"("before":{"n":1},"after":{"n":2},"position":{"timestamp":1700000000000000,)"
            R"("tick":3},"source":"app"})");
  c.before.clear();
  EXPECT_THAT(
      RenderChange("mia-projection-update", "hook", c),
      HasSubstr(R"("operationType":"INSERT","operationTimestamp":"2023-11-14T22:13:20.000Z")"));
}

TEST(ConnectorDefinitionTest, NatsRoundTripAndErrors) {
  ConnectorDefinition d{
      .name = "dbz.pg",
      .type = "nats",
      .source = "pg",
      .urls = {"nats://n1:4222", "tls://n2:4222"},
      .stream = "DBZ",
      .filter_subject = "dbserver1.inventory.>",
      .subjects = {{"dbserver1.inventory.products", "products"}, {"dbserver1.*.orders", "orders"}}};
  auto back = FromJson(ToJson(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ToJson(*back), ToJson(d));
  EXPECT_EQ(back->subjects, d.subjects);
  EXPECT_EQ(ConsumerName(*back), "cairn_dbz_pg");
  back->consumer = "mine";
  EXPECT_EQ(ConsumerName(*back), "mine");
  struct Case {
    const char* json;
    const char* words;
  } cases[] = {
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"]})", "stream: must be"},
      {R"({"name":"a","type":"nats","source":"s","urls":["http://h"],"stream":"S"})",
       "urls[0]: \"http://h\" is not a nats:// or tls:// URL"},
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"],"stream":"S.x"})", "stream"},
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"],"stream":"S",)"
       R"("consumer":"c.d"})",
       "consumer"},
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"],"stream":"S",)"
       R"("filter_subject":"a..b"})",
       "filter_subject"},
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"],"stream":"S",)"
       R"("subjects":{"a.>.b":"c"}})",
       "subjects[\"a.>.b\"]"},
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"],"stream":"S",)"
       R"("subjects":{"a.b":""}})",
       "subjects[\"a.b\"]"},
      {R"({"name":"a","type":"nats","source":"s","urls":["nats://h"],"stream":"S",)"
       R"("headers":{"X":"y"}})",
       "headers: are for sse"},
      {R"({"name":"a","source":"s","urls":["http://h"],"stream":"S"})", "for nats connectors"},
  };
  for (const Case& c : cases) {
    auto r = FromJson(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.words)) << c.json;
  }
}

TEST(ConnectorDefinitionTest, SubjectPatterns) {
  EXPECT_TRUE(SubjectMatches("a.b.c", "a.b.c"));
  EXPECT_FALSE(SubjectMatches("a.b.c", "a.b"));
  EXPECT_FALSE(SubjectMatches("a.b", "a.b.c"));
  EXPECT_TRUE(SubjectMatches("a.*.c", "a.x.c"));
  EXPECT_FALSE(SubjectMatches("a.*.c", "a.x.y.c"));
  EXPECT_TRUE(SubjectMatches("a.>", "a.x.y.c"));
  EXPECT_FALSE(SubjectMatches("a.>", "a"));
  EXPECT_TRUE(SubjectMatches(">", "a"));
  EXPECT_FALSE(SubjectMatches("*", "a.b"));
}

TEST(SinkDefinitionTest, NatsSinks) {
  SinkDefinition d{.name = "out",
                   .type = "nats",
                   .url = "nats://a:4222,nats://b:4222",
                   .shape = "omnia-datapoints",
                   .subject = "cdc.{source}.{collection}",
                   .omnia_schema = "plant/v1"};
  auto back = SinkFromJson(SinkToJson(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(SinkToJson(*back), SinkToJson(d));
  EXPECT_EQ(back->subject, d.subject);
  EXPECT_EQ(back->omnia_schema, "plant/v1");
  struct Case {
    const char* json;
    const char* words;
  } cases[] = {
      {R"({"name":"h","type":"nats","url":"http://x"})", "nats:// or tls://"},
      {R"({"name":"h","type":"nats","url":"nats://x","subject":"a.*"})", "sink subject"},
      {R"({"name":"h","type":"nats","url":"nats://x","subject":"a..{collection}"})",
       "sink subject"},
      {R"({"name":"h","type":"nats","url":"nats://x","headers":{"A":"b"}})", "for http sinks"},
  };
  for (const Case& c : cases) {
    auto r = SinkFromJson(c.json);
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.words)) << c.json;
  }
}

TEST(SinkDefinitionTest, OmniaDatapointsGroupPointsPerSeries) {
  auto point = [](uint64_t seq, const char* key, const char* after) {
    return Change{.seq = seq,
                  .collection = "series",
                  .key = key,
                  .op = Op::kUpsert,
                  .after = after,
                  .source = "plant"};
  };
  std::vector<Change> batch = {
      point(1, R"("s1")", R"({"time":"t1","value":1.5,"status":192})"),
      point(2, R"("s2")", R"({"time":"t1","value":2,"status":192})"),
      point(3, R"("s1")", R"({"time":"t2","value":1.6,"status":192})"),
      Change{.seq = 4,
             .collection = "series",
             .key = R"("s3")",
             .op = Op::kDelete,
             .before = R"({"time":"t0"})"},
  };
  EXPECT_EQ(RenderDatapoints("equinor/v2", batch),
            R"({"data":{"items":[{"id":"s1","datapoints":[{"time":"t1","value":1.5,"status":192},)"
            R"({"time":"t2","value":1.6,"status":192}]},{"id":"s2","datapoints":[{"time":"t1",)"
            R"("value":2,"status":192}]}]},"schema":"equinor/v2"})");
  EXPECT_EQ(RenderDatapoints("x", {batch[3]}), "");  // a delete carries no point
}

}  // namespace
}  // namespace cairn::connectors
