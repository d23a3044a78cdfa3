// What the connector manager runs: one reader per sse URL, one per nats
// connector. Each is a thread that commits what it read into the store.
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_READER_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_READER_H_

#include "cairn/connector.h"

namespace cairn::connectors {

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
