#include "dispatcher.h"

#include <malloc.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"

namespace cairn::server {

using wire::ToGrpc;
using wire::ToProto;

grpc::Status TooManyReadStreams(const Deps* deps) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat(deps->options->max_subscriptions,
                                   " subscriptions and snapshots are open, the server's limit "
                                   "(cairnd --max-subscriptions); retry later"));
}

void Dispatcher::Loop() {
  uint64_t seen = store_->LastSeq();
  absl::Time next_sweep = absl::Now() + absl::Seconds(1);
  while (!stopping_.HasBeenNotified()) {
    // Wake on commit; the short timeout also picks up reactors that went
    // idle between our scan and their commit (or wait for the budget).
    store_->AwaitCommit(seen, absl::Milliseconds(2));
    seen = store_->LastSeq();
    absl::Time now = absl::Now();
    bool sweep = now >= next_sweep;
    {
      absl::MutexLock l(&mu_);
      for (auto& [id, r] : reactors_) {
        if (r->idle()) r->Pump();
        if (sweep) r->CutOffIfStalledSince(now - deps_->options->subscriber_stall_timeout);
      }
    }
    if (sweep) next_sweep = now + absl::Seconds(1);
  }
}

void Dispatcher::TrimLoop() {
  // glibc keeps what is freed in its arenas: blocks the cache evicted,
  // memtable arenas, messages of streams. Under a budget that retained
  // memory is most of what RSS has beyond the budget (10M upserts under
  // 256 MiB: 283-309 MiB RSS during the updates without trimming, 216-234
  // with a trim a second; a trim took 9 ms at the median, 95 at most).
  // Without one, streams that ended leave theirs until a trim; gRPC frees a
  // stream's transport memory (and a closed connection's) some time after
  // the stream ends, so trim for a few seconds, not once.
  const bool budget = deps_->options->memory_budget > 0;
  int sweeps = 0;
  while (!stopping_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
    if (deps_->trim_soon.exchange(false)) sweeps = kTrimSweeps;
    if (budget || sweeps > 0) {
      if (sweeps > 0) --sweeps;
      malloc_trim(0);
    }
  }
}

void SubscribeReactor::Pump() {
  std::optional<grpc::Status> end;
  {
    absl::MutexLock l(&mu_);
    if (state_ != State::kIdle) return;
    // No room in the budget: stay idle; the dispatcher pumps again.
    if (!budget_->HasRoom(kMaxSubscribeBatchBytes + (64 << 10))) return;
    SubscriptionItem item;
    absl::StatusOr<bool> got = true;
    uint64_t position;  // the subscription's position after the message
    if (held_) {
      item = *std::move(held_);
      held_.reset();
      position = held_position_;
    } else {
      got = sub_->Next(absl::ZeroDuration(), &item);
      position = sub_->position();
      // Nothing in flight: what the filter skipped counts as delivered.
      if (got.ok() && !*got) delivered_.store(position, std::memory_order_relaxed);
    }
    if (!got.ok()) {
      state_ = State::kDone;
      end = ToGrpc(got.status());
    } else if (*got) {
      item_.Clear();
      ToProto(item, &item_);
      if (item.kind == SubscriptionItem::Kind::kChange) {
        // Behind: the changes already committed after it share the message,
        // as long as it stays under kMaxSubscribeBatchBytes (a change that
        // would cross it waits for the next message, which it starts).
        auto weight = [](const Change& c) {
          return c.before.size() + c.after.size() + c.key.size() + c.collection.size() +
                 c.source.size() + 64;
        };
        size_t bytes = weight(item.change);
        for (uint32_t n = 1; n < max_batch_; ++n) {
          SubscriptionItem next;
          auto more = sub_->Next(absl::ZeroDuration(), &next);
          if (!more.ok()) break;  // the error comes back next time
          if (!*more) {
            position = sub_->position();  // past what the filter skipped
            break;
          }
          if (next.kind != SubscriptionItem::Kind::kChange ||
              bytes + weight(next.change) > kMaxSubscribeBatchBytes) {
            held_ = std::move(next);
            held_position_ = sub_->position();
            break;
          }
          bytes += weight(next.change);
          ToProto(next.change, item_.add_more_changes());
          position = sub_->position();
        }
      }
      message_position_ = position;
      state_ = State::kWriting;
      write_buf_.Clear();
      if (grpc::Status s = Serialize(item_, &write_buf_); !s.ok()) {
        state_ = State::kDone;
        end = s;
      } else {
        // Serialized, the message is no longer needed: a large one's
        // buffers go back now.
        write_bytes_ = write_buf_.Length();
        if (write_bytes_ > (64 << 10)) {
          item_ = v1::SubscribeItem();
        } else {
          item_.Clear();
        }
        budget_->Take(write_bytes_);
        write_started_ = absl::Now();
        StartWrite(&write_buf_);
      }
    }
  }
  // Finish last: OnDone (which deletes this) cannot run before it.
  if (end) Finish(*end);
}

void SubscribeReactor::End(const grpc::Status& s) {
  {
    absl::MutexLock l(&mu_);
    if (state_ == State::kDone) return;
    state_ = State::kDone;
  }
  sub_->Cancel();
  Finish(s);
}

void SubscribeReactor::OnDone() {
  dispatcher_->Remove(this);
  deps_->trim_soon.store(true, std::memory_order_relaxed);
  delete this;
}

}  // namespace cairn::server
