#include "subscription.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "key_codec.h"
#include "store_impl.h"

namespace cairn::internal {
namespace {

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return v.empty() || std::find(v.begin(), v.end(), s) != v.end();
}

class StoreSubscription : public Subscription {
 public:
  StoreSubscription(StoreImpl* store, SubscribeOptions options, std::vector<std::string> key_bytes,
                    std::string prefix_bytes, std::unique_ptr<SnapshotCursor> snapshot,
                    uint64_t start_seq)
      : store_(store),
        options_(std::move(options)),
        key_bytes_(std::move(key_bytes)),
        prefix_bytes_(std::move(prefix_bytes)),
        snapshot_(std::move(snapshot)),
        cursor_(start_seq) {
    store_->AddSubscriber();
  }
  ~StoreSubscription() override { store_->RemoveSubscriber(); }

  absl::StatusOr<bool> Next(absl::Duration timeout, SubscriptionItem* item) override {
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      if (cancelled_.load()) return absl::CancelledError("subscription cancelled");
      if (snapshot_) {
        CAIRN_ASSIGN_OR_RETURN(bool more, snapshot_->Next());
        if (more) {
          const Entity& e = snapshot_->entity();
          // An entity belongs to the source of its newest version: the
          // sources filter means the same here as for changes.
          if (!Contains(options_.filter.sources, e.source)) continue;
          if (!MatchesEntity(e.collection, e.key)) continue;
          item->kind = SubscriptionItem::Kind::kSnapshotEntity;
          item->entity = e;
          return true;
        }
        item->kind = SubscriptionItem::Kind::kSnapshotEnd;
        item->seq = snapshot_->seq();
        snapshot_.reset();
        return true;
      }
      if (!buffer_.empty()) {
        item->kind = SubscriptionItem::Kind::kChange;
        item->change = std::move(buffer_.front());
        buffer_.pop_front();
        delivered_.store(item->change.seq);
        return true;
      }
      uint64_t last = store_->LastSeq();
      if (cursor_ < last) {
        uint64_t oldest = store_->horizon().oldest_seq.load();
        if (cursor_ + 1 < oldest) {
          return absl::OutOfRangeError(absl::StrCat("changes after seq ", cursor_,
                                                    " were removed by retention; oldest ",
                                                    "available seq is ", oldest));
        }
        std::vector<Change> chunk;
        uint64_t read_to = cursor_;
        CAIRN_RETURN_IF_ERROR(store_->ReadChanges(cursor_, kSubscriptionChunk, &chunk, &read_to));
        if (read_to - cursor_ >= kSubscriptionChunk) behind_ = true;
        cursor_ = read_to;
        for (Change& c : chunk) {
          if (Matches(c)) buffer_.push_back(std::move(c));
        }
        if (buffer_.empty()) delivered_.store(cursor_);
        continue;
      }
      if (!caught_up_sent_ || behind_) {
        caught_up_sent_ = true;
        behind_ = false;
        item->kind = SubscriptionItem::Kind::kCaughtUp;
        item->seq = cursor_;
        return true;
      }
      if (absl::Now() >= deadline) return false;
      store_->WaitForCommit(cursor_, deadline, &cancelled_);
    }
  }

  void Cancel() override {
    cancelled_.store(true);
    store_->WakeWaiters();
  }
  uint64_t position() const override { return delivered_.load(); }

 private:
  bool MatchesEntity(std::string_view collection, std::string_view key_json) {
    if (!Contains(options_.filter.collections, collection)) return false;
    if (key_bytes_.empty() && prefix_bytes_.empty()) return true;
    auto kb = keys::EncodeKey(key_json);
    if (!kb.ok()) return false;
    return MatchesKey(*kb);
  }
  bool MatchesKey(std::string_view kb) {
    if (!prefix_bytes_.empty() && !kb.starts_with(prefix_bytes_)) return false;
    return key_bytes_.empty() ||
           std::find(key_bytes_.begin(), key_bytes_.end(), kb) != key_bytes_.end();
  }
  bool Matches(const Change& c) {
    if (!Contains(options_.filter.sources, c.source)) return false;
    return MatchesEntity(c.collection, c.key);
  }

  StoreImpl* store_;
  SubscribeOptions options_;
  std::vector<std::string> key_bytes_;
  std::string prefix_bytes_;
  std::unique_ptr<SnapshotCursor> snapshot_;
  uint64_t cursor_;  // last seq read from the change feed
  std::deque<Change> buffer_;
  bool caught_up_sent_ = false;
  bool behind_ = false;
  std::atomic<bool> cancelled_{false};
  std::atomic<uint64_t> delivered_{0};
};

}  // namespace

std::unique_ptr<Subscription> NewStoreSubscription(StoreImpl* store, SubscribeOptions options,
                                                   std::vector<std::string> key_bytes,
                                                   std::string prefix_bytes,
                                                   std::unique_ptr<SnapshotCursor> snapshot,
                                                   uint64_t start_seq) {
  return std::make_unique<StoreSubscription>(store, std::move(options), std::move(key_bytes),
                                             std::move(prefix_bytes), std::move(snapshot),
                                             start_seq);
}

}  // namespace cairn::internal
