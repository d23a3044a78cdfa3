// The recent-changes ring (engine/src/recent_changes.h): what it answers,
// when it restarts, and its bounds.
#include "recent_changes.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace cairn::internal {
namespace {

std::vector<Change> Seqs(uint64_t first, uint64_t last, size_t doc_bytes = 10) {
  std::vector<Change> out;
  for (uint64_t s = first; s <= last; ++s) {
    out.push_back(
        Change{.seq = s, .collection = "c", .key = "1", .after = std::string(doc_bytes, 'x')});
  }
  return out;
}

std::vector<uint64_t> SeqsOf(const std::vector<Change>& changes) {
  std::vector<uint64_t> out;
  for (const Change& c : changes) out.push_back(c.seq);
  return out;
}

TEST(RecentChangesTest, AnswersOnlyWhenItHoldsTheNextSeq) {
  RecentChanges ring(100, 1 << 20);
  std::vector<Change> out;
  uint64_t last_read = 0;
  EXPECT_EQ(ring.Read(0, 10, 100, &out, &last_read), 0u);  // empty
  ring.Append(Seqs(5, 9));
  ring.Append(Seqs(10, 12));
  EXPECT_EQ(ring.Read(3, 12, 100, &out, &last_read), 0u);   // seq 4 is not held
  EXPECT_EQ(ring.Read(12, 12, 100, &out, &last_read), 0u);  // nothing after 12
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(ring.Read(4, 12, 100, &out, &last_read), 8u);
  EXPECT_EQ(SeqsOf(out), (std::vector<uint64_t>{5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(last_read, 12u);
  // Bounded by max and by the published last seq.
  out.clear();
  EXPECT_EQ(ring.Read(6, 12, 2, &out, &last_read), 2u);
  EXPECT_EQ(SeqsOf(out), (std::vector<uint64_t>{7, 8}));
  EXPECT_EQ(last_read, 8u);
  out.clear();
  EXPECT_EQ(ring.Read(6, 9, 100, &out, &last_read), 3u);
  EXPECT_EQ(SeqsOf(out), (std::vector<uint64_t>{7, 8, 9}));
}

TEST(RecentChangesTest, AGapRestartsIt) {
  RecentChanges ring(100, 1 << 20);
  ring.Append(Seqs(1, 5));
  ring.Append(Seqs(8, 9));  // 6 and 7 were not captured
  std::vector<Change> out;
  uint64_t last_read = 0;
  EXPECT_EQ(ring.Read(2, 9, 100, &out, &last_read), 0u);
  EXPECT_EQ(ring.Read(7, 9, 100, &out, &last_read), 2u);
  EXPECT_EQ(SeqsOf(out), (std::vector<uint64_t>{8, 9}));
}

TEST(RecentChangesTest, KeepsTheNewestWithinCountAndBytes) {
  RecentChanges by_count(4, 1 << 20);
  by_count.Append(Seqs(1, 10));
  std::vector<Change> out;
  uint64_t last_read = 0;
  EXPECT_EQ(by_count.Read(5, 10, 100, &out, &last_read), 0u);  // 6 was dropped
  EXPECT_EQ(by_count.Read(6, 10, 100, &out, &last_read), 4u);

  const size_t weight = RecentChanges::Weight(Seqs(1, 1, 1000)[0]);
  RecentChanges by_bytes(1000, 3 * weight);
  by_bytes.Append(Seqs(1, 10, 1000));
  out.clear();
  EXPECT_EQ(by_bytes.Read(6, 10, 100, &out, &last_read), 0u);
  EXPECT_EQ(by_bytes.Read(7, 10, 100, &out, &last_read), 3u);
  EXPECT_EQ(SeqsOf(out), (std::vector<uint64_t>{8, 9, 10}));
}

}  // namespace
}  // namespace cairn::internal
