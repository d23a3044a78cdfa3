// Store::Subscribe with a callback: every change in seq order on the
// subscription's own thread, stop on false, one on_end call, option errors
// returned up front.
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

Event Put(int key, uint64_t ts) {
  return {.source = "s",
          .collection = "c",
          .key = std::to_string(key),
          .position = {ts, 0},
          .payload = R"({"v":1})"};
}

class CallbackSubscriptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open(dir_.path(), Options{});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(CallbackSubscriptionTest, DeliversEveryChangeInOrderUntilDestroyed) {
  ASSERT_TRUE(store_->Ingest({Put(1, 1), Put(2, 2), Put(3, 3)}, {}).ok());
  absl::Mutex mu;
  std::vector<uint64_t> seqs;
  std::thread::id callback_thread;
  std::atomic<int> ends{0};
  absl::Status end_status = absl::UnknownError("not ended");
  {
    auto sub = store_->Subscribe(
        {.start = SubscribeOptions::Start::kFromSeq, .from_seq = 0},
        [&](const SubscriptionItem& item) {
          absl::MutexLock l(&mu);
          callback_thread = std::this_thread::get_id();
          if (item.kind == SubscriptionItem::Kind::kChange) seqs.push_back(item.change.seq);
          return true;
        },
        [&](const absl::Status& s) {
          end_status = s;
          ++ends;
        });
    ASSERT_TRUE(sub.ok()) << sub.status();
    // Changes committed while the subscription runs arrive too.
    for (int i = 4; i <= 50; ++i) ASSERT_TRUE(store_->Ingest({Put(i, i)}, {}).ok());
    absl::MutexLock l(&mu);
    ASSERT_TRUE(
        mu.AwaitWithTimeout(absl::Condition(
                                +[](std::vector<uint64_t>* v) { return v->size() == 50; }, &seqs),
                            absl::Seconds(30)));
    EXPECT_NE(callback_thread, std::this_thread::get_id());
    EXPECT_EQ((*sub)->position(), 50u);
  }
  for (uint64_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], i + 1);
  EXPECT_EQ(ends.load(), 1);
  EXPECT_TRUE(end_status.ok()) << end_status;
}

TEST_F(CallbackSubscriptionTest, StopsWhenTheCallbackSaysSo) {
  ASSERT_TRUE(store_->Ingest({Put(1, 1), Put(2, 2), Put(3, 3)}, {}).ok());
  std::atomic<int> calls{0};
  absl::Notification ended;
  auto sub = store_->Subscribe(
      {.start = SubscribeOptions::Start::kFromSeq, .from_seq = 0},
      [&](const SubscriptionItem& item) { return ++calls < 2; },
      [&](const absl::Status& s) {
        EXPECT_TRUE(s.ok()) << s;
        ended.Notify();
      });
  ASSERT_TRUE(sub.ok());
  ASSERT_TRUE(ended.WaitForNotificationWithTimeout(absl::Seconds(30)));
  ASSERT_TRUE(store_->Ingest({Put(4, 4)}, {}).ok());
  EXPECT_EQ(calls.load(), 2);
}

TEST_F(CallbackSubscriptionTest, BadOptionsAreReturnedNotCalledBack) {
  bool called = false;
  auto sub = store_->Subscribe({.filter = {.keys = {"[1,2]"}}},
                               [&](const SubscriptionItem&) { return called = true; });
  EXPECT_EQ(sub.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sub.status().message()), ::testing::HasSubstr("filter.keys[0]"));
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace cairn
