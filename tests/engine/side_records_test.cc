// Side records (Store::PutSideRecord, IngestOptions::side_records): kept,
// listed by prefix, deleted, bounded, and written with a batch atomically:
// with it when it commits (even of duplicates only), not at all when it is
// refused.
#include <string>
#include <vector>

#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

Event Upsert(int key, int tick) {
  return {.source = "feed",
          .collection = "c",
          .key = std::to_string(key),
          .position = {1000, static_cast<uint64_t>(tick)},
          .payload = R"({"v":1})"};
}

std::vector<std::string> Names(const std::vector<SideRecord>& records) {
  std::vector<std::string> out;
  for (const SideRecord& r : records) out.push_back(r.name + "=" + r.value);
  return out;
}

TEST(SideRecordsTest, PutGetListDelete) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    Store& s = **store;
    EXPECT_TRUE(absl::IsNotFound(s.GetSideRecord("connector/a").status()));
    ASSERT_TRUE(s.PutSideRecord("connector/a", "1").ok());
    ASSERT_TRUE(s.PutSideRecord("connector/b", "2").ok());
    ASSERT_TRUE(s.PutSideRecord("connector/a", "3").ok());  // replaces
    ASSERT_TRUE(s.PutSideRecord("sink/x", std::string("\0bin", 4)).ok());
    EXPECT_EQ(*s.GetSideRecord("connector/a"), "3");
    EXPECT_EQ(*s.GetSideRecord("sink/x"), std::string("\0bin", 4));
    EXPECT_THAT(Names(*s.ListSideRecords("connector/")),
                ::testing::ElementsAre("connector/a=3", "connector/b=2"));
    EXPECT_EQ(s.ListSideRecords("")->size(), 3u);
  }
  auto store = Store::Open(dir.path(), Options{});  // they persist
  ASSERT_TRUE(store.ok()) << store.status();
  Store& s = **store;
  EXPECT_EQ(*s.GetSideRecord("connector/b"), "2");
  EXPECT_EQ(*s.DeleteSideRecords("connector/"), 2u);
  EXPECT_TRUE(absl::IsNotFound(s.GetSideRecord("connector/a").status()));
  EXPECT_THAT(Names(*s.ListSideRecords("")),
              ::testing::ElementsAre(std::string("sink/x=\0bin", 11)));
  EXPECT_EQ(*s.DeleteSideRecords("nothing/"), 0u);
}

TEST(SideRecordsTest, BoundsAreErrorsNamingTheRecord) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  Store& s = **store;
  absl::Status empty = s.PutSideRecord("", "v");
  EXPECT_TRUE(absl::IsInvalidArgument(empty)) << empty;
  EXPECT_THAT(std::string(empty.message()), HasSubstr("name must be 1 to 1024 bytes, not 0"));
  EXPECT_TRUE(absl::IsInvalidArgument(s.PutSideRecord(std::string(1025, 'n'), "v")));
  absl::Status big = s.PutSideRecord("n", std::string((1 << 20) + 1, 'v'));
  EXPECT_TRUE(absl::IsInvalidArgument(big)) << big;
  EXPECT_THAT(std::string(big.message()), HasSubstr("1048577 bytes, more than 1048576"));

  IngestOptions o;
  o.side_records = {{"ok", "1"}, {"", "2"}};
  auto r = s.Ingest({Upsert(1, 1)}, o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("side_records[1].name"));
  EXPECT_EQ(s.LastSeq(), 0u);  // nothing of the batch
  EXPECT_TRUE(absl::IsNotFound(s.GetSideRecord("ok").status()));
  o.side_records.assign(65, {"n", "v"});
  EXPECT_TRUE(absl::IsInvalidArgument(s.Ingest({Upsert(1, 1)}, o).status()));
}

TEST(SideRecordsTest, WrittenWithTheBatchOrNotAtAll) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    Store& s = **store;
    IngestOptions o{.durable = true};
    o.side_records = {{"connector/feed/0", "id-2"}};
    auto r = s.Ingest({Upsert(1, 1), Upsert(2, 2)}, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->applied, 2u);
    EXPECT_EQ(*s.GetSideRecord("connector/feed/0"), "id-2");

    // A refused batch writes neither its events nor its records.
    o.side_records = {{"connector/feed/0", "id-3"}};
    Event bad = Upsert(3, 3);
    bad.payload = "[not an object";
    EXPECT_FALSE(s.Ingest({Upsert(4, 4), bad}, o).ok());
    EXPECT_EQ(*s.GetSideRecord("connector/feed/0"), "id-2");
    EXPECT_EQ(s.LastSeq(), 2u);

    // Duplicates only: the resume point still moves.
    o.side_records = {{"connector/feed/0", "id-2-again"}};
    r = s.Ingest({Upsert(1, 1), Upsert(2, 2)}, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->duplicates, 2u);
    EXPECT_EQ(*s.GetSideRecord("connector/feed/0"), "id-2-again");

    // Through IngestBatches: each batch's records with it.
    std::vector<Store::Batch> batches(2);
    batches[0].events = {Upsert(5, 5)};
    batches[0].options.side_records = {{"connector/feed/1", "a"}};
    batches[1].events = {bad};
    batches[1].options.side_records = {{"connector/feed/2", "b"}};
    auto results = s.IngestBatches(std::move(batches));
    ASSERT_TRUE(results[0].ok());
    EXPECT_FALSE(results[1].ok());
    EXPECT_EQ(*s.GetSideRecord("connector/feed/1"), "a");
    EXPECT_TRUE(absl::IsNotFound(s.GetSideRecord("connector/feed/2").status()));
  }
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->GetSideRecord("connector/feed/0"), "id-2-again");
  EXPECT_EQ((*store)->LastSeq(), 3u);
}

}  // namespace
}  // namespace cairn
