// Subscriptions on cairnd: one SubscribeReactor per Query.Subscribe stream,
// all pumped by one Dispatcher thread, under one ByteBudget.
//
// Subscriptions never block a gRPC thread. A reactor is either writing (owned
// by gRPC until OnWriteDone), idle (waiting for commits; the dispatcher thread
// pumps it when the store commits) or done. Pump() pulls with a zero timeout.
// Memory per subscriber is one message: a slow client just stops pulling and
// later catches up from the stored change feed. All subscribers together
// hold at most ServerOptions::subscriber_buffer_bytes in messages written
// and not yet taken by their clients (plus one message being built): a
// subscriber that finds the budget used up waits, idle. One whose message
// is not taken within subscriber_stall_timeout is cut off.
#ifndef CAIRN_SERVER_DISPATCHER_H_
#define CAIRN_SERVER_DISPATCHER_H_

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "cairn/store.h"
#include "cairn/v1/cairn.pb.h"
#include "service.h"

namespace cairn::server {

// Bytes of subscription messages in flight, all subscribers together.
class ByteBudget {
 public:
  explicit ByteBudget(size_t limit) : limit_(limit) {}
  // Room for one more message of the largest size (always, when nothing is
  // in flight: a budget below one message still lets one through).
  bool HasRoom(size_t largest) const {
    size_t used = used_.load(std::memory_order_relaxed);
    return used == 0 || used + largest <= limit_;
  }
  void Take(size_t n) { used_.fetch_add(n, std::memory_order_relaxed); }
  void Give(size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  size_t used() const { return used_.load(std::memory_order_relaxed); }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

// Bounds on the changes one subscription message carries (max_batch).
constexpr uint32_t kMaxSubscribeBatch = 1024;
constexpr size_t kMaxSubscribeBatchBytes = 1 << 20;

class SubscribeReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  SubscribeReactor(Dispatcher* dispatcher, Deps* deps, ByteBudget* budget,
                   grpc::CallbackServerContext* ctx, uint64_t id, std::unique_ptr<Subscription> sub,
                   uint32_t max_batch)
      : dispatcher_(dispatcher),
        deps_(deps),
        budget_(budget),
        ctx_(ctx),
        id_(id),
        sub_(std::move(sub)),
        max_batch_(std::clamp<uint32_t>(max_batch, 1, kMaxSubscribeBatch)),
        delivered_(sub_->position()) {}

  // Cuts the stream off when its message in flight was written before
  // `deadline` and is still not taken. On the dispatcher's thread.
  void CutOffIfStalledSince(absl::Time deadline) {
    {
      absl::MutexLock l(&mu_);
      if (state_ != State::kWriting || cut_off_ || write_started_ > deadline) return;
      cut_off_ = true;
    }
    spdlog::warn("subscription {} from {}: its client took no message for {}; cut off", id_,
                 ctx_->peer(), absl::FormatDuration(deps_->options->subscriber_stall_timeout));
    // The stream's status cannot pass the data the client does not read:
    // cancelling resets the stream, and the client resumes from its seq.
    ctx_->TryCancel();
  }

  // Starts writing the next message if the reactor is idle and there is an
  // item (and room in the budget); otherwise leaves it idle for the
  // dispatcher to pump again after the next commit.
  void Pump();
  // Ends the stream with `s` unless it already ended.
  void End(const grpc::Status& s);
  uint64_t id() const { return id_; }
  // Seq up to which every change was written to the client (or skipped by
  // the filter): the stream's position for lag in Stats.
  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }
  bool idle() {
    absl::MutexLock l(&mu_);
    return state_ == State::kIdle;
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      budget_->Give(write_bytes_);
      write_bytes_ = 0;
    }
    if (!ok) return End(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    {
      absl::MutexLock l(&mu_);
      delivered_.store(message_position_, std::memory_order_relaxed);
      if (state_ == State::kWriting) state_ = State::kIdle;
    }
    Pump();
  }
  void OnCancel() override { End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }
  void OnDone() override;

 private:
  enum class State { kIdle, kWriting, kDone };
  Dispatcher* dispatcher_;
  Deps* deps_;
  ByteBudget* budget_;
  grpc::CallbackServerContext* ctx_;
  uint64_t id_;
  std::unique_ptr<Subscription> sub_;
  const uint32_t max_batch_;  // changes per message
  absl::Mutex mu_;
  State state_ = State::kIdle;
  // Pulled while filling a batch but not a change: sent next.
  std::optional<SubscriptionItem> held_ ABSL_GUARDED_BY(mu_);
  uint64_t held_position_ ABSL_GUARDED_BY(mu_) = 0;     // the position after it
  uint64_t message_position_ ABSL_GUARDED_BY(mu_) = 0;  // after the message in flight
  std::atomic<uint64_t> delivered_{0};
  std::optional<grpc::Status> pending_end_;  // set while writing
  v1::SubscribeItem item_;
  grpc::ByteBuffer write_buf_;                   // item_, serialized: the write in flight
  size_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // the message in flight, in the budget
  absl::Time write_started_ ABSL_GUARDED_BY(mu_);
  bool cut_off_ ABSL_GUARDED_BY(mu_) = false;
};

class Dispatcher {
 public:
  explicit Dispatcher(Deps* deps)
      : deps_(deps),
        store_(deps->store),
        budget_(deps->options->subscriber_buffer_bytes),
        thread_([this] { Loop(); }),
        trimmer_([this] { TrimLoop(); }) {}
  ~Dispatcher() { Stop(); }

  // A place for one more read stream (subscription or snapshot), or false
  // at --max-subscriptions. Each true is matched by one Release.
  bool Reserve() {
    if (open_.fetch_add(1) < deps_->options->max_subscriptions) return true;
    open_.fetch_sub(1);
    return false;
  }
  void Release() { open_.fetch_sub(1); }
  ByteBudget* budget() { return &budget_; }

  void Add(SubscribeReactor* r) {
    absl::MutexLock l(&mu_);
    reactors_[r->id()] = r;
  }
  void Remove(SubscribeReactor* r) {
    {
      absl::MutexLock l(&mu_);
      reactors_.erase(r->id());
    }
    Release();
  }
  uint64_t NextId() { return next_id_.fetch_add(1) + 1; }
  // Ends every subscription with UNAVAILABLE and stops the thread.
  void EndAll() {
    absl::MutexLock l(&mu_);
    for (auto& [id, r] : reactors_) r->End(Unavailable());
  }
  void Stop() {
    if (!stopping_.HasBeenNotified()) stopping_.Notify();
    if (thread_.joinable()) thread_.join();
    if (trimmer_.joinable()) trimmer_.join();
  }
  std::vector<std::pair<uint64_t, uint64_t>> Delivered() {
    absl::MutexLock l(&mu_);
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (auto& [id, r] : reactors_) out.emplace_back(id, r->delivered());
    return out;
  }

 private:
  // Pumps idle reactors after each commit (or every 2 ms), and once a
  // second cuts off stalled ones.
  void Loop();
  // Once a second gives freed memory back to the system (malloc_trim): under
  // a memory budget always, else for a few seconds after streams end. On a
  // thread of its own: a trim of a large heap takes tens of milliseconds.
  void TrimLoop();

  // Seconds that still trim after the last stream ended.
  static constexpr int kTrimSweeps = 5;
  Deps* deps_;
  Store* store_;
  ByteBudget budget_;
  std::atomic<int> open_{0};
  absl::Mutex mu_;
  std::map<uint64_t, SubscribeReactor*> reactors_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_id_{0};
  absl::Notification stopping_;  // both threads end
  std::thread thread_;
  std::thread trimmer_;
};

// RESOURCE_EXHAUSTED: --max-subscriptions read streams are open.
grpc::Status TooManyReadStreams(const Deps* deps);

}  // namespace cairn::server

#endif  // CAIRN_SERVER_DISPATCHER_H_
