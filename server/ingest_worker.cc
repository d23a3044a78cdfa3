#include "ingest_worker.h"

#include "absl/container/flat_hash_map.h"
#include "convert.h"

namespace cairn::server {

void IngestWorker::Run() {
  for (;;) {
    std::vector<Item> items;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](IngestWorker* w) { return !w->queue_.empty() || w->stopping_; }, this));
      if (queue_.empty()) return;
      // Everything queued, up to a bound on the events one call holds in
      // memory (at least one batch).
      size_t take = 0, events = 0;
      while (take < queue_.size() && (take == 0 || events < kMaxWorkerEvents)) {
        events += queue_[take].events;
        ++take;
      }
      items.assign(std::make_move_iterator(queue_.begin()),
                   std::make_move_iterator(queue_.begin() + take));
      queue_.erase(queue_.begin(), queue_.begin() + take);
    }
    std::vector<std::unique_ptr<Store::PreparedBatch>> batches;
    std::vector<size_t> slot;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].batch) continue;
      batches.push_back(std::move(items[i].batch));
      slot.push_back(i);
    }
    if (!batches.empty()) {
      auto results = store_->IngestPrepared(std::move(batches));
      for (size_t k = 0; k < results.size(); ++k) {
        v1::IngestAck& ack = items[slot[k]].ack;
        if (results[k].ok()) {
          wire::ToProto(*results[k], &ack);
        } else {
          wire::FailAck(results[k].status(), &ack);
        }
      }
    }
    // Each stream's acks together, in its order.
    struct Acks {
      std::vector<v1::IngestAck> acks;
      size_t bytes = 0;
    };
    absl::flat_hash_map<AckSink*, Acks> by_sink;
    for (Item& item : items) {
      Acks& a = by_sink[item.sink];
      a.acks.push_back(std::move(item.ack));
      a.bytes += item.bytes;
    }
    for (auto& [sink, a] : by_sink) sink->Acked(std::move(a.acks), a.bytes);
  }
}

}  // namespace cairn::server
