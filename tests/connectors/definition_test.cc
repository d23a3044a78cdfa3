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

}  // namespace
}  // namespace cairn::connectors
