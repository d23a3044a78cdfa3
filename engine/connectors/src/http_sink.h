// One `http` sink: a thread that subscribes to the store from the sink's
// checkpoint, renders changes in the sink's shape, POSTs them in batches and
// advances the checkpoint only after a 2xx (README "Connectors and sinks").
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_HTTP_SINK_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_HTTP_SINK_H_

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cairn/connectors.h"
#include "cairn/store.h"

namespace cairn::connectors {

// The sink's side records: definition, checkpoint (decimal seq), dead
// letters (one per message, by seq).
std::string SinkRecord(std::string_view name);
std::string SinkPosRecord(std::string_view name);
std::string DeadLetterPrefix(std::string_view name);

// What one POST got: 2xx, retry (network error, 408, 429, 5xx) or a
// permanent refusal.
struct PostResult {
  enum class Kind { kDelivered, kRetry, kRejected } kind = Kind::kRetry;
  long http = 0;  // NOLINT(runtime/int)
  std::string error;
  std::string response;  // the first 1,000 bytes
};
PostResult Post(const SinkDefinition& d, const std::string& body,
                const std::atomic<bool>* abort = nullptr);

class HttpSink {
 public:
  HttpSink(Store* store, SinkDefinition def);
  ~HttpSink();
  HttpSink(const HttpSink&) = delete;
  HttpSink& operator=(const HttpSink&) = delete;

  void Start();
  // Asks the thread to end; Stop waits for it. Both idempotent; an
  // undelivered batch is sent again after a restart.
  void RequestStop();
  void Stop();
  SinkStatus status() const;

 private:
  void Run();
  // Delivers `batch` (retrying while the destination is down); false when
  // stopping first.
  bool Deliver(const std::vector<Change>& batch);
  void Advance(uint64_t seq);
  void Error(std::string_view message);
  void Sleep(absl::Duration d);

  Store* const store_;
  const SinkDefinition def_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  SinkStatus status_ ABSL_GUARDED_BY(mu_);
  absl::Time caught_up_at_ ABSL_GUARDED_BY(mu_) = absl::Now();
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_HTTP_SINK_H_
