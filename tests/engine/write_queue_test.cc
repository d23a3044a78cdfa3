// The writer queue (engine/src/write_queue.h): one commit at a time, groups
// within their bound, exclusive writers alone, every writer's order kept,
// and a group's failure reaching each of its writers.
#include "write_queue.h"

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace cairn::internal {
namespace {

struct TestWriter : QueuedWriter {
  int thread = 0;
  int index = 0;  // the thread's n-th writer
  size_t events = 1;
  bool alone = false;
  size_t weight() const { return events; }
  bool exclusive() const { return alone; }
};

TEST(WriteQueueTest, ConcurrentWritersShareCommitsWithinTheirBounds) {
  constexpr size_t kMaxWeight = 10;
  constexpr int kThreads = 8, kPerThread = 300;
  WriteQueue<TestWriter> queue(kMaxWeight);
  std::atomic<int> committing{0};
  std::mutex mu;
  // Each group as (weight, exclusive) per writer: the writers themselves
  // are gone once their Run returns.
  std::vector<std::vector<std::pair<size_t, bool>>> groups;
  std::map<int, int> next_index;  // per thread: the index its next writer must have
  bool order_kept = true, overlapped = false;
  auto commit = [&](std::vector<TestWriter*>& group) {
    if (committing.fetch_add(1) != 0) overlapped = true;
    {
      std::lock_guard<std::mutex> l(mu);
      auto& g = groups.emplace_back();
      for (TestWriter* w : group) {
        g.emplace_back(w->events, w->alone);
        if (next_index[w->thread] != w->index) order_kept = false;
        next_index[w->thread] = w->index + 1;
      }
    }
    committing.fetch_sub(1);
    return absl::OkStatus();
  };
  std::vector<std::thread> threads;
  std::atomic<int> done_writers{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int index = 0;
      for (int round = 0; index < kPerThread; ++round) {
        // Sometimes several writers at once (as IngestBatches queues them).
        std::vector<TestWriter> ws(1 + round % 3);
        std::vector<TestWriter*> ptrs;
        for (TestWriter& w : ws) {
          w.thread = t;
          w.index = index++;
          w.events = 1 + (w.index * 7 + t) % 6;
          w.alone = (w.index + t) % 50 == 0;
          ptrs.push_back(&w);
        }
        queue.Run(ptrs, commit);
        for (TestWriter& w : ws) {
          if (w.done && w.status.ok()) done_writers.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(overlapped) << "two groups committed at once";
  EXPECT_TRUE(order_kept);
  size_t writers = 0;
  bool shared = false;
  for (const auto& g : groups) {
    writers += g.size();
    size_t weight = 0;
    for (auto [events, alone] : g) {
      weight += events;
      if (alone) {
        EXPECT_EQ(g.size(), 1u) << "an exclusive writer shared its group";
      }
    }
    if (g.size() > 1) {
      shared = true;
      EXPECT_LE(weight, kMaxWeight);
    }
  }
  EXPECT_EQ(static_cast<int>(writers), done_writers.load());
  EXPECT_GE(writers, static_cast<size_t>(kThreads * kPerThread));
  EXPECT_TRUE(shared) << "no two writers ever shared a commit";
}

TEST(WriteQueueTest, AGroupFailureReachesEveryWriterWithoutItsOwn) {
  WriteQueue<TestWriter> queue(100);
  std::vector<TestWriter> ws(3);
  std::vector<TestWriter*> ptrs = {&ws[0], &ws[1], &ws[2]};
  queue.Run(ptrs, [](std::vector<TestWriter*>& group) {
    group[1]->status = absl::InvalidArgumentError("own failure");
    return absl::UnavailableError("commit failed");
  });
  EXPECT_TRUE(ws[0].done && ws[1].done && ws[2].done);
  EXPECT_EQ(ws[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ws[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ws[2].status.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cairn::internal
