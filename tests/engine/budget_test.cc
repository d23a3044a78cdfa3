// The memory budget (Options::memory_budget): the block cache, memtables and
// the recent-changes ring share one budget, and the WAL is bounded by it.
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

constexpr size_t kMiB = 1 << 20;

// ~60 MB of writes in all (each event writes its document several times):
// several budgets' worth, so memtables and the WAL must be flushed away.
void IngestMuch(Store& store, size_t entities) {
  std::string body(400, 'x');
  for (size_t round = 0; round < 4; ++round) {
    for (size_t k = 0; k < entities; k += 1000) {
      std::vector<Event> batch;
      for (size_t i = k; i < k + 1000 && i < entities; ++i) {
        batch.push_back(
            Event{.source = "s",
                  .collection = "c",
                  .key = absl::StrCat(i),
                  .position = {1700000000000000 + round * entities + i, 0},
                  .payload = absl::StrCat(R"({"r":)", round, R"(,"b":")", body, "\"}")});
      }
      auto r = store.Ingest(std::move(batch), {});
      ASSERT_TRUE(r.ok()) << r.status();
    }
  }
}

TEST(BudgetTest, CacheMemtablesAndWalStayWithinTheBudget) {
  TempDir dir;
  const size_t budget = 24 * kMiB;
  auto store = Store::Open(dir.path(), Options{.memory_budget = budget});
  ASSERT_TRUE(store.ok()) << store.status();
  StoreStats::Resources r = (*store)->Stats().resources;
  EXPECT_EQ(r.memory_budget, budget);
  EXPECT_EQ(r.block_cache_capacity, budget - budget / 8);  // the ring's eighth off the top
  IngestMuch(**store, 20000);
  // The WAL past one budget is flushed away; deleting the files it no longer
  // needs happens in the background.
  for (int i = 0; i < 100; ++i) {
    r = (*store)->Stats().resources;
    if (r.wal_bytes <= budget) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_LE(r.wal_bytes, budget) << r.wal_files << " WAL files";
  // Memtables are charged to the cache (flushes start at half the budget,
  // and one may be running): they and what the cache holds stay within its
  // capacity (one block of slack).
  EXPECT_LE(r.memtables, r.block_cache_capacity);
  EXPECT_LE(r.block_cache_usage, r.block_cache_capacity + kMiB);
  EXPECT_GT(r.sst_bytes, 0u);  // flushed, not held
  EXPECT_EQ((*store)->LastSeq(), 80000u);
}

// The memtables' hard bound: even with every family holding all its
// memtables (flushes held back by a slow disk), they fit in half the budget.
// The test above passes on a fast disk either way; this one does not.
TEST(BudgetTest, FullMemtablesOfEveryFamilyFitInHalfTheBudget) {
  const size_t cold = internal::kNumColdCfs, hot = internal::kNumCfs - cold;
  ASSERT_EQ(cold, 3u);  // default, staging and log (truncates only, format 3)
  for (size_t budget = 16 * kMiB; budget <= (size_t{64} << 30); budget = budget * 3 / 2) {
    size_t h = internal::HotWriteBuffer(budget);
    size_t c = internal::ColdWriteBuffer(budget);
    EXPECT_LE(internal::kWriteBuffers * (hot * h + cold * c), budget / 2) << budget;
    EXPECT_GE(h, c) << budget;  // the hot families get the larger share
    EXPECT_GT(c, 0u) << budget;
  }
}

TEST(BudgetTest, NoBudgetKeepsTheOldLayoutAndTooSmallABudgetIsRefused) {
  TempDir dir;
  {
    auto store =
        Store::Open(dir.path(), Options{.memory_budget = 0, .block_cache_bytes = 8 * kMiB});
    ASSERT_TRUE(store.ok()) << store.status();
    StoreStats::Resources r = (*store)->Stats().resources;
    EXPECT_EQ(r.memory_budget, 0u);
    EXPECT_EQ(r.block_cache_capacity, 8 * kMiB);
  }
  {
    // The program's share comes off the cache; more than half is refused.
    auto store =
        Store::Open(dir.path(), Options{.memory_budget = 64 * kMiB, .reserved_bytes = 8 * kMiB});
    ASSERT_TRUE(store.ok()) << store.status();
    StoreStats::Resources r = (*store)->Stats().resources;
    EXPECT_EQ(r.block_cache_capacity, 64 * kMiB - 8 * kMiB - 8 * kMiB);
    EXPECT_EQ(r.reserved, 8 * kMiB);
  }
  auto greedy =
      Store::Open(dir.path(), Options{.memory_budget = 64 * kMiB, .reserved_bytes = 33 * kMiB});
  ASSERT_FALSE(greedy.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(greedy.status())) << greedy.status();
  EXPECT_THAT(std::string(greedy.status().message()), HasSubstr("half of the memory budget"));
  auto small = Store::Open(dir.path(), Options{.memory_budget = 8 * kMiB});
  ASSERT_FALSE(small.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(small.status())) << small.status();
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("16 MiB"));
}

}  // namespace
}  // namespace cairn
