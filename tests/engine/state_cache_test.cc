// StateCache (engine/src/state_cache.h): pending writes follow the group
// commit's save points, only committed live records stay, and the cache
// holds at most its bound.
#include "state_cache.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace cairn::internal {
namespace {

std::string Found(StateCache& c, std::string_view entity) {
  const std::string* v = c.Find(entity);
  return v ? *v : "<none>";
}

TEST(StateCacheTest, PendingWritesFollowTheGroupCommit) {
  StateCache c(1 << 20);
  c.Put("a", "a1", true);
  EXPECT_EQ(Found(c, "a"), "a1");  // the batch reads its own write
  c.KeepBatch();
  c.Put("a", "a2", true);
  c.Put("b", "b1", true);
  EXPECT_EQ(Found(c, "a"), "a2");
  c.DropBatch();  // rolled back to its save point: the group's write again
  EXPECT_EQ(Found(c, "a"), "a1");
  EXPECT_EQ(Found(c, "b"), "<none>");
  c.CommitGroup();
  EXPECT_EQ(Found(c, "a"), "a1");

  // A failed group write: nothing of it stays, the committed entry does.
  c.Put("a", "a3", true);
  c.KeepBatch();
  c.Put("c", "c1", true);
  c.DropGroup();
  EXPECT_EQ(Found(c, "a"), "a1");
  EXPECT_EQ(Found(c, "c"), "<none>");
}

TEST(StateCacheTest, ATombstoneIsReadWhilePendingAndForgottenOnCommit) {
  StateCache c(1 << 20);
  c.Put("a", "live", true);
  c.CommitGroup();
  c.Put("a", "tombstone", false);
  EXPECT_EQ(Found(c, "a"), "tombstone");
  c.CommitGroup();
  // Retention may drop a tombstone record: the store is read instead.
  EXPECT_EQ(Found(c, "a"), "<none>");
}

TEST(StateCacheTest, HoldsAtMostItsBoundAndKeepsWhatIsInUse) {
  constexpr size_t kBound = 64 << 10;
  StateCache c(kBound);
  const std::string value(100, 'v');
  for (int i = 0; i < 10000; ++i) {
    c.Put(absl::StrCat("e", i), value, true);
    c.CommitGroup();
    // One hot entity read all along survives every turnover.
    if (i > 0) {
      EXPECT_EQ(Found(c, "e0"), value) << i;
    }
    EXPECT_LE(c.bytes(), kBound);
  }
  EXPECT_EQ(Found(c, "e5"), "<none>");  // long evicted
  EXPECT_EQ(Found(c, "e9999"), value);
  c.Clear();
  EXPECT_EQ(c.bytes(), 0u);
  EXPECT_EQ(Found(c, "e9999"), "<none>");
}

}  // namespace
}  // namespace cairn::internal
