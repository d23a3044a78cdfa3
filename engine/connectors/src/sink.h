// One sink: a thread that subscribes to the store from the sink's
// checkpoint, renders changes in the sink's shape, sends them in batches to
// its destination (destination.h) and advances the checkpoint only after
// the destination acknowledged (README "Connectors and sinks").
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_SINK_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_SINK_H_

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cairn/connectors.h"
#include "cairn/store.h"
#include "destination.h"

namespace cairn::connectors {

// The sink's side records: definition, checkpoint (decimal seq), dead
// letters (one per message, by seq).
std::string SinkRecord(std::string_view name);
std::string SinkPosRecord(std::string_view name);
std::string DeadLetterPrefix(std::string_view name);
absl::StatusOr<std::vector<DeadLetter>> ReadDeadLetters(Store* store, std::string_view name);
// Sends each dead letter again, once, on the caller's thread with a
// connection of its own; those the destination accepts leave the list.
// Returns how many did.
absl::StatusOr<size_t> ReplayDeadLetters(Store* store, const SinkDefinition& def,
                                         const std::atomic<bool>* abort);

class Sink {
 public:
  Sink(Store* store, SinkDefinition def);
  ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  void Start();
  // Asks the thread to end; Stop waits for it. Both idempotent; an
  // undelivered batch is sent again after a restart.
  void RequestStop();
  void Stop();
  SinkStatus status() const;
  // `n` dead letters left the list (a replay).
  void ForgetDeadLetters(uint64_t n);

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
  std::unique_ptr<Destination> destination_;  // the thread's
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  SinkStatus status_ ABSL_GUARDED_BY(mu_);
  absl::Time caught_up_at_ ABSL_GUARDED_BY(mu_) = absl::Now();
  bool caught_up_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t dead_letters_ ABSL_GUARDED_BY(mu_) = 0;  // in the store
};

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_SINK_H_
