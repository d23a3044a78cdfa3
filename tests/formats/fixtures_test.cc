// Every fixture under ../shared/fixtures reaches the end state its README
// states, decoded by its format and ingested into a real store.
#include <string>
#include <vector>

#include "format_test_util.h"
#include "gmock/gmock.h"

namespace cairn::formats {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> Keys(const std::map<std::string, std::string>& content) {
  std::vector<std::string> keys;
  for (const auto& [k, v] : content) keys.push_back(k);
  return keys;
}

// The lines of a file, without their newlines.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

const SourceDefinition kProductsDb{
    .name = "products-db", .format = "debezium", .key_fields = {{"products", {"id"}}}};

class FixturesTest : public StoreFixture {};

TEST_F(FixturesTest, DebeziumPostgresSchemaExclude) {
  auto r = Ingest(kProductsDb, ReadFixture("flink/debezium-postgres-data-schema-exclude.txt"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->applied, 16u);
  auto content = Content("products");
  EXPECT_THAT(Keys(content),
              ElementsAre("101", "102", "103", "104", "105", "106", "107", "108", "109", "110"));
  EXPECT_EQ(content["101"],
            R"({"id":101,"name":"scooter","description":"Small 2-wheel scooter","weight":3.14})");
  EXPECT_THAT(content["106"], HasSubstr(R"("description":"18oz carpenter hammer")"));
  EXPECT_THAT(content["107"], HasSubstr(R"("weight":5.1})"));
  EXPECT_EQ(
      content["110"],
      R"({"id":110,"name":"jacket","description":"new water resistent white wind breaker","weight":0.5})");
  EXPECT_TRUE(absl::IsNotFound(store_->Get("products", "111").status()));

  // 111 was created, updated and deleted: all three are in its history.
  auto h = store_->History("products", "111", {});
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->size(), 3u);
  EXPECT_EQ((*h)[2].op, Op::kDelete);
  EXPECT_EQ((*h)[2].position.timestamp,
            1596010988168000u);                 // source.ts_ms in µs
  EXPECT_EQ((*h)[2].position.tick, 34133800u);  // source.lsn
  // op r is a snapshot load.
  auto h101 = store_->History("products", "101", {});
  ASSERT_TRUE(h101.ok());
  ASSERT_EQ(h101->size(), 1u);
  EXPECT_TRUE((*h101)[0].snapshot);
}

TEST_F(FixturesTest, DebeziumReplicaIdentityRejectsKeylessDelete) {
  std::string text = ReadFixture("flink/debezium-postgres-data-replica-identity.txt");
  // As one batch: the keyless delete (the 16th record) rejects all of it.
  auto r = Ingest(kProductsDb, text);
  ASSERT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("record 15: line 16: before:"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no key can be found"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("REPLICA IDENTITY FULL"));
  EXPECT_EQ(store_->LastSeq(), 0u);

  // Without it, the updates (before: null) apply as upserts by the key in
  // after.
  std::vector<std::string> lines = Lines(text);
  ASSERT_EQ(lines.size(), 16u);
  std::string without_delete;
  for (size_t i = 0; i + 1 < lines.size(); ++i) without_delete += lines[i] + "\n";
  ASSERT_TRUE(Ingest(kProductsDb, without_delete).ok());
  auto content = Content("products");
  EXPECT_EQ(content.size(), 11u);
  EXPECT_THAT(content["106"], HasSubstr("18oz carpenter hammer"));
  EXPECT_THAT(content["111"], HasSubstr(R"("weight":5.17)"));

  // With a message key in a Kafka envelope, the same delete applies.
  std::string keyed = R"({"key":{"id":111},"value":)" + lines.back() + R"(,"offset":16})";
  auto d = Ingest(kProductsDb, keyed);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(absl::IsNotFound(store_->Get("products", "111").status()));
  EXPECT_EQ(Content("products").size(), 10u);
}

TEST_F(FixturesTest, GoldenGateMatchesDebezium) {
  SourceDefinition ogg{
      .name = "ogg", .format = "goldengate", .collection_map = {{"OGG.TBL_TEST", "products"}}};
  auto r = Ingest(ogg, ReadFixture("flink/ogg-data.txt"));
  ASSERT_TRUE(r.ok()) << r.status();
  auto content = Content("products");

  auto other = Store::Open(dir_.Sub("debezium"), Options{});
  ASSERT_TRUE(other.ok());
  auto events = Decode(kProductsDb, ReadFixture("flink/debezium-postgres-data-schema-exclude.txt"));
  ASSERT_TRUE(events.ok());
  ASSERT_TRUE((*other)->Ingest(*events, {}).ok());
  std::map<std::string, std::string> expected;
  ASSERT_TRUE((*other)
                  ->Snapshot({.collection = "products"},
                             [&](const Entity& e) {
                               expected[e.key] = e.document;
                               return true;
                             })
                  .ok());
  EXPECT_EQ(Keys(content), Keys(expected));
  // Same rows; float digits are kept as GoldenGate sent them.
  EXPECT_THAT(content["106"], HasSubstr(R"("description":"18oz carpenter hammer")"));
  EXPECT_THAT(content["107"], HasSubstr(R"("weight":5.099999904632568})"));
  EXPECT_THAT(content["110"], HasSubstr(R"("weight":0.5})"));
  EXPECT_THAT(content["110"], HasSubstr("new water resistent white wind breaker"));
  EXPECT_TRUE(absl::IsNotFound(store_->Get("products", "111").status()));
  auto h = store_->History("products", "107", {});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  // op_ts "2020-05-13 17:28:19.505000" UTC and pos 153.
  EXPECT_EQ((*h)[1].position.timestamp, 1589390899505000u);
  EXPECT_EQ((*h)[1].position.tick, 153u);
}

// The three Kafka message shapes of the seeds: an insert then a delete of the
// same composite key.
TEST_F(FixturesTest, KafkaEnvelopeSeeds) {
  const std::string kKey = R"({"FISCAL_CODE":"ABCDEF12B02M100O","USER_ID":123})";
  struct Case {
    SourceDefinition source;
    std::string file;
    std::string collection;
    std::string first_after;
  };
  std::vector<Case> cases = {
      {{.name = "dbz", .format = "debezium", .default_collection = "users"},
       "seeds/debezium-kafka.jsonl",
       "users",
       R"({"USER_ID":123,"FISCAL_CODE":"the-fiscal-code-123","COINS":300000000})"},
      {{.name = "gg", .format = "goldengate"},
       "seeds/goldengate.jsonl",
       "MY_TABLE",
       R"({"USER_ID":123,"FISCAL_CODE":"the-fiscal-code-123","COINS":300000000})"},
      {{.name = "iis", .format = "infosphere", .default_collection = "users_iis"},
       "seeds/infosphere-basic.jsonl",
       "users_iis",
       R"({"NAME":456})"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    auto r = Ingest(c.source, ReadFixture(c.file));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->applied, 2u);
    EXPECT_TRUE(absl::IsNotFound(store_->Get(c.collection, kKey).status()));
    auto h = store_->History(c.collection, kKey, {});
    ASSERT_TRUE(h.ok()) << h.status();
    ASSERT_EQ(h->size(), 2u);
    EXPECT_EQ((*h)[0].op, Op::kUpsert);
    EXPECT_EQ((*h)[0].after, c.first_after);
    EXPECT_EQ((*h)[1].op, Op::kDelete);
    EXPECT_EQ((*h)[1].before, c.first_after);
  }
  // Kafka timestamps are epoch milliseconds; the offset is the tick.
  auto h = store_->History("users", kKey, {});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ((*h)[0].position, (Position{1234556789000, 100}));
  EXPECT_EQ((*h)[1].position, (Position{1234556789000, 101}));
}

TEST_F(FixturesTest, BitBrokerStreamSession) {
  SourceDefinition contrib{.name = "contrib", .format = "bitbroker"};
  ASSERT_TRUE(store_->PutSource(contrib).ok());
  auto id = store_->OpenSession("contrib", "countries", SessionMode::kStream);
  ASSERT_TRUE(id.ok()) << id.status();

  auto upserts =
      Decode(contrib, ReadFixture("seeds/bitbroker-upsert.json"), {.collection = "countries"});
  ASSERT_TRUE(upserts.ok()) << upserts.status();
  std::vector<SessionRecord> records;
  for (const Event& e : *upserts) {
    ASSERT_EQ(e.op, Op::kUpsert);
    records.push_back({e.key, e.payload});
  }
  auto keys = store_->SessionUpsert(*id, records);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(*keys, ElementsAre(R"("GB")", R"("IN")", R"("BR")"));

  auto deletes =
      Decode(contrib, ReadFixture("seeds/bitbroker-delete.json"), {.collection = "countries"});
  ASSERT_TRUE(deletes.ok()) << deletes.status();
  std::vector<std::string> ids;
  for (const Event& e : *deletes) {
    ASSERT_EQ(e.op, Op::kDelete);
    ids.push_back(e.key);
  }
  ASSERT_TRUE(store_->SessionDelete(*id, ids).ok());
  ASSERT_TRUE(store_->CloseSession(*id, true).ok());

  auto content = Content("countries");
  EXPECT_THAT(Keys(content), ElementsAre(R"("IN")"));
  EXPECT_THAT(content[R"("IN")"], HasSubstr(R"("instance":{"independence":1947})"));
}

TEST_F(FixturesTest, BitBrokerSchemaValidationReportsEveryRecord) {
  SourceDefinition contrib{
      .name = "contrib",
      .format = "bitbroker",
      .json_schemas = {{"countries", R"({"type":"object","required":["code","population"],
          "properties":{"population":{"type":"integer","minimum":0},"code":{"type":"string"}}})"}}};
  auto ok =
      Decode(contrib, ReadFixture("seeds/bitbroker-upsert.json"), {.collection = "countries"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  std::string bad =
      R"([{"id":"GB","name":"United Kingdom","entity":{"code":"GB","population":1}},
    {"id":"XX","name":"Nowhere","entity":{"code":"XX","population":-5}},
    {"id":"","name":"Empty","entity":{"code":"E","population":1}},
    {"id":"YY","name":"Y","entity":{"population":"many"}}])";
  auto r = Decode(contrib, bad, {.collection = "countries"});
  ASSERT_TRUE(absl::IsInvalidArgument(r.status()));
  std::string msg(r.status().message());
  EXPECT_THAT(msg, HasSubstr("record 1: entity: does not match"));
  EXPECT_THAT(msg, HasSubstr("record 2: id: must be 1 to 64 characters"));
  EXPECT_THAT(msg, HasSubstr("record 3: entity: does not match"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("record 0")));
}

TEST_F(FixturesTest, OmniaDatapointsCollapseRepeats) {
  SourceDefinition plant{.name = "plant", .format = "datapoints", .default_collection = "series"};
  auto r = Ingest(plant, ReadFixture("seeds/omnia-datapoints.json"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->applied, 4u);
  EXPECT_EQ(r->duplicates,
            1u);  // the repeated 10:01 point of the second series
  auto h = store_->History("series", R"("4ec07552-7334-47f8-ac9f-666e65304b1a")", {});
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[1].after, R"({"time":"2018-11-30T10:01:00.000Z","value":224.6,"status":192})");
  auto e = store_->Get("series", R"("f69ec89b-494b-4e07-9da2-7c89489e3346")");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->document, R"({"time":"2018-11-30T10:01:00.000Z","value":124.6,"status":192})");
  EXPECT_EQ(e->position.timestamp, 1543572060000000u);
}

TEST_F(FixturesTest, AriaFeedIncompleteThenComplete) {
  SourceDefinition billing{.name = "billing", .format = "sse-feed"};
  auto events = Decode(billing, ReadFixture("seeds/aria-feed.sse"));
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 8u);
  // One event at a time, as a client would receive them.
  for (size_t i = 0; i < events->size(); ++i) {
    auto r = store_->Ingest({(*events)[i]}, {});
    ASSERT_TRUE(r.ok()) << r.status();
    if (i == 3) {  // 1003's update arrived before its load
      auto e = store_->Get("account", "1003");
      ASSERT_TRUE(e.ok());
      EXPECT_FALSE(e->complete);
    }
    if (i == 7) {
      EXPECT_EQ(r->duplicates, 1u);  // the repeated update at tick 7
    }
  }
  auto content = Content("account");
  EXPECT_THAT(Keys(content), ElementsAre("1001", "1002", "1003"));
  EXPECT_EQ(content["1001"], R"({"acct_no":1001,"status":"ACTIVE","plan":"gold","balance":99.0})");
  EXPECT_EQ(content["1002"], R"({"acct_no":1002,"status":"ACTIVE","plan":"silver","balance":0})");
  EXPECT_EQ(content["1003"],
            R"({"acct_no":1003,"status":"ACTIVE","plan":"platinum","balance":10})");
  auto e = store_->Get("account", "1003");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->complete);
  auto h = store_->History("account", "1004", {});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_TRUE((*h)[0].snapshot);
  EXPECT_EQ((*h)[1].op, Op::kDelete);
}

}  // namespace
}  // namespace cairn::formats
