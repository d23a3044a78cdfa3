// What the connector manager runs: one reader per sse URL, one per nats
// connector. Each is a thread that commits what it read into the store.
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_READER_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_READER_H_

#include "absl/status/status.h"
#include "cairn/connector.h"

namespace cairn::connectors {

// A commit the store refuses for good: a record it rejects (invalid), or
// one older than its retention (OUT_OF_RANGE). Anything else may pass when
// sent again.
inline bool Refused(const absl::Status& s) {
  return absl::IsInvalidArgument(s) || absl::IsOutOfRange(s);
}

class Reader {
 public:
  virtual ~Reader() = default;
  virtual void Start() = 0;
  // Asks the thread to end (it commits what it read); Stop waits for it.
  // Both idempotent.
  virtual void RequestStop() = 0;
  virtual void Stop() = 0;
  virtual UrlStatus status() const = 0;
};

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_READER_H_
