// Where a sink sends its messages: an HTTP webhook or NATS JetStream. A
// Destination renders a batch of changes in the sink's shape and sends it;
// Sink (sink.h) owns the order, the checkpoint and the dead letters.
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_DESTINATION_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_DESTINATION_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cairn/connectors.h"
#include "cairn/store.h"

namespace cairn::connectors {

// One message as a destination sends it.
struct Message {
  std::string subject;  // nats
  std::string id;       // nats: Nats-Msg-Id
  std::string body;
};

// The messages of a batch: one per change (id "<sink>-<seq>"), or for the
// omnia-datapoints shape one for the whole batch ("<sink>-<first>-<last>";
// none when every change is a delete). The subject is the sink's template
// filled in from the (first) change.
std::vector<Message> RenderMessages(const SinkDefinition& d, const std::vector<Change>& batch);

// What sending got: delivered (2xx, or every JetStream ack), retry
// (network errors, 408, 429, 5xx, a JetStream timeout or error), or a
// permanent refusal (other 4xx; a message over NATS's or the stream's
// size bound).
struct SendResult {
  enum class Kind { kDelivered, kRetry, kRejected } kind = Kind::kRetry;
  long http = 0;  // NOLINT(runtime/int)
  std::string error;
  std::string response;  // the first 1,000 bytes
};

class Destination {
 public:
  virtual ~Destination() = default;
  // Sends `messages` (all of one batch); `abort` ends the wait early.
  virtual SendResult Send(const std::vector<Message>& messages, const std::atomic<bool>* abort) = 0;
};

std::unique_ptr<Destination> MakeDestination(const SinkDefinition& d);

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_DESTINATION_H_
