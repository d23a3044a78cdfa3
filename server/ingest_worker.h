// The ingest worker: one thread that commits every batch the ingest streams
// received and prepared (validated and canonicalized on their gRPC threads,
// Store::Prepare), from all of them at once, with one Store::IngestPrepared
// call per round (each batch still atomic, with its own ack, but sharing one
// commit), and hands each stream its acks in the order it submitted them.
#ifndef CAIRN_SERVER_INGEST_WORKER_H_
#define CAIRN_SERVER_INGEST_WORKER_H_

#include <optional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cairn/store.h"
#include "cairn/v1/cairn.pb.h"

namespace cairn::server {

// Events the ingest worker takes into one Store::IngestPrepared call.
inline constexpr size_t kMaxWorkerEvents = 200000;

// Where a batch's ack goes: the stream that submitted it.
class AckSink {
 public:
  // The acks of batches this sink queued, in the order they were queued;
  // `bytes` is what they weighed when received.
  virtual void Acked(std::vector<v1::IngestAck> acks, size_t bytes) = 0;

 protected:
  ~AckSink() = default;
};

class IngestWorker {
 public:
  struct Item {
    AckSink* sink = nullptr;
    size_t bytes = 0;
    v1::IngestAck ack;  // batch id; the failure when no batch
    // Validated by Store::Prepare on the stream's gRPC thread; null when the
    // batch was rejected before (the failure is in `ack`).
    std::unique_ptr<Store::PreparedBatch> batch;
    size_t events = 0;  // in `batch`
  };

  explicit IngestWorker(Store* store) : store_(store), thread_([this] { Run(); }) {}
  ~IngestWorker() { Stop(); }

  void Submit(Item item) {
    absl::MutexLock l(&mu_);
    queue_.push_back(std::move(item));
  }

  // Ingests what is queued, then returns.
  void Stop() {
    {
      absl::MutexLock l(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  // Takes what is queued (up to kMaxWorkerEvents), ingests it, hands out
  // the acks; until Stop() finds the queue empty.
  void Run();

  Store* store_;
  absl::Mutex mu_;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_INGEST_WORKER_H_
