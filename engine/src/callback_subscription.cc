// Store::Subscribe with a callback: a thread per subscription driving the
// pull interface. The pull side already bounds memory and never drops a
// change, so the thread only adds ordering-preserving delivery.
#include <atomic>
#include <thread>

#include "cairn/store.h"

namespace cairn {
namespace {

class CallbackSubscriptionImpl final : public CallbackSubscription {
 public:
  CallbackSubscriptionImpl(std::unique_ptr<Subscription> sub,
                           std::function<bool(const SubscriptionItem&)> on_item,
                           std::function<void(const absl::Status&)> on_end)
      : sub_(std::move(sub)),
        thread_([this, on_item = std::move(on_item), on_end = std::move(on_end)] {
          absl::Status end = Run(on_item);
          if (on_end) on_end(end);
        }) {}

  ~CallbackSubscriptionImpl() override {
    stopping_ = true;
    sub_->Cancel();
    thread_.join();
  }

  uint64_t position() const override { return sub_->position(); }

 private:
  absl::Status Run(const std::function<bool(const SubscriptionItem&)>& on_item) {
    SubscriptionItem item;
    while (true) {
      // A long wait: Cancel() wakes it, so the timeout only bounds how long
      // a missed wake-up could last.
      absl::StatusOr<bool> got = sub_->Next(absl::Seconds(1), &item);
      if (!got.ok()) {
        return stopping_ && absl::IsCancelled(got.status()) ? absl::OkStatus() : got.status();
      }
      if (*got && !on_item(item)) return absl::OkStatus();
    }
  }

  std::unique_ptr<Subscription> sub_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: starts once the members it uses exist
};

}  // namespace

absl::StatusOr<std::unique_ptr<CallbackSubscription>> Store::Subscribe(
    const SubscribeOptions& options, std::function<bool(const SubscriptionItem&)> on_item,
    std::function<void(const absl::Status&)> on_end) {
  absl::StatusOr<std::unique_ptr<Subscription>> sub = Subscribe(options);
  if (!sub.ok()) return sub.status();
  return std::make_unique<CallbackSubscriptionImpl>(*std::move(sub), std::move(on_item),
                                                    std::move(on_end));
}

}  // namespace cairn
