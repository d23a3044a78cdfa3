// Store::Prepare and Store::IngestPrepared: the two halves of IngestBatches
// that cairnd runs on different threads.
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

Event Upsert(int key, uint64_t ts, const std::string& payload) {
  return Event{.source = "s",
               .collection = "c",
               .key = absl::StrCat(key),
               .position = {1700000000000000 + ts, 0},
               .payload = payload};
}

TEST(PrepareTest, PreparesLikeIngestAndCommitsInTheOrderGiven) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  // The same error as Ingest, and nothing written.
  auto bad = (*store)->Prepare({{Upsert(1, 1, "{}"), Upsert(2, 2, "[1]")}, {}});
  ASSERT_FALSE(bad.ok());
  auto ingest_bad = (*store)->Ingest({Upsert(1, 1, "{}"), Upsert(2, 2, "[1]")}, {});
  EXPECT_EQ(bad.status(), ingest_bad.status());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("event 1"));
  EXPECT_EQ((*store)->LastSeq(), 0u);

  // Prepared on other threads (canonicalized there: the spaces go), then
  // committed in the order given: the later batch's upsert of key 1 wins.
  std::vector<std::unique_ptr<Store::PreparedBatch>> prepared(2);
  std::thread first([&] {
    auto p = (*store)->Prepare({{Upsert(1, 1, R"({ "v" : 1 })")}, {}});
    ASSERT_TRUE(p.ok()) << p.status();
    prepared[0] = *std::move(p);
  });
  std::thread second([&] {
    auto p = (*store)->Prepare({{Upsert(1, 2, R"({"v":2})"), Upsert(2, 2, "{}")}, {}});
    ASSERT_TRUE(p.ok()) << p.status();
    prepared[1] = *std::move(p);
  });
  first.join();
  second.join();
  auto results = (*store)->IngestPrepared(std::move(prepared));
  ASSERT_EQ(results.size(), 2u);
  ASSERT_TRUE(results[0].ok() && results[1].ok());
  EXPECT_EQ(results[0]->first_seq, 1u);
  EXPECT_EQ(results[1]->first_seq, 2u);
  EXPECT_EQ(results[1]->last_seq, 3u);
  EXPECT_EQ((*store)->Get("c", "1")->document, R"({"v":2})");
  auto h = (*store)->History("c", "1", {});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ(h->at(0).after, R"({"v":1})");
  EXPECT_TRUE((*store)->IngestPrepared({}).empty());
}

}  // namespace
}  // namespace cairn
