// A `nats` connector: a thread that fetches from a JetStream durable pull
// consumer and decodes each message in the source's format, and a second
// one that commits what the first decoded, in fetch order, and acknowledges
// the messages only after the commit that holds their events (README
// "Connectors and sinks").
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_NATS_READER_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_NATS_READER_H_

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cairn/connectors.h"
#include "cairn/source.h"
#include "cairn/store.h"
#include "nats_client.h"
#include "reader.h"

namespace cairn::connectors {

class NatsReader : public Reader {
 public:
  NatsReader(Store* store, ConnectorDefinition def);
  ~NatsReader() override;  // Stop()
  NatsReader(const NatsReader&) = delete;
  NatsReader& operator=(const NatsReader&) = delete;

  void Start() override;
  void RequestStop() override;
  void Stop() override;
  UrlStatus status() const override;

 private:
  enum class Outcome { kCommitted, kRetry, kFailed };

  // One message of a fetched list: its events are [first, first + count) of
  // the batch's `events`.
  struct Item {
    natsMsg* msg = nullptr;
    size_t first = 0, count = 0;
    uint64_t stream_seq = 0;
    std::string error;  // the format rejected it
  };
  // A fetched list, decoded; the commit stage acknowledges and frees it.
  struct Batch {
    natsMsgList list{};
    std::vector<Item> items;
    std::vector<Event> events;
  };

  void Run();
  absl::Status Subscribe(NatsClient* client, natsSubscription** sub);
  std::unique_ptr<Batch> Decode(natsMsgList list);
  // The message's events (the collection from the subject map when a
  // pattern matches), or the format's error in item->error.
  std::vector<Event> DecodeOne(Item* item);
  // The commit stage: takes batches in order until the queue closes or a
  // batch fails; then naks what is left (kRetry) or leaves it (kFailed).
  void CommitLoop();
  // Commits and acknowledges one batch.
  Outcome Commit(Batch* batch);
  void SetState(std::string_view state);
  void Error(std::string_view message);
  void Sleep(absl::Duration d);

  Store* const store_;
  const ConnectorDefinition def_;
  const std::string consumer_;
  const std::string label_;   // "<stream>/<consumer>"
  const std::string record_;  // the resume record (the last stream seq, for status)
  SourceDefinition source_;

  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  UrlStatus status_ ABSL_GUARDED_BY(mu_);

  // Between the two stages, per connection: at most kQueue batches decoded
  // ahead of the commits.
  absl::Mutex queue_mu_;
  std::deque<std::unique_ptr<Batch>> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool queue_closed_ ABSL_GUARDED_BY(queue_mu_) = false;
  Outcome commit_outcome_ ABSL_GUARDED_BY(queue_mu_) = Outcome::kCommitted;
};

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_NATS_READER_H_
