// A connector's definition and status (cairn/connectors.h runs them):
// plain value types, shared by the engine side and the remote client.
#ifndef CAIRN_CONNECTOR_H_
#define CAIRN_CONNECTOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cairn/event.h"

namespace cairn::connectors {

enum class OnError {
  kStop,  // a record the source's format rejects stops the URL (state failed)
  kSkip,  // it is counted (`skipped`) and reading goes on after it
};

struct ConnectorDefinition {
  std::string name;                            // 1-128 of [A-Za-z0-9._-]
  std::string type = "sse";                    // sse
  std::string source;                          // a registered source; sse: of format sse-feed
  std::vector<std::string> urls;               // sse: 1 to 16, http:// or https://
  std::map<std::string, std::string> headers;  // sent with every request
  std::string ca_file;  // PEM roots for https (default: the system's); TLS is always verified
  // How long the feed keeps events (Aria: 48 h); 0: forever. A URL away
  // longer than this reports `gap`: events may be missing.
  absl::Duration retention = absl::ZeroDuration();
  // A commit holds at most batch_events events, and is made at the latest
  // batch_time after its first event arrived.
  uint32_t batch_events = 1000;
  absl::Duration batch_time = absl::Milliseconds(200);
  bool durable = false;  // commits fsynced
  OnError on_error = OnError::kStop;
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  // No byte for this long (not even a heartbeat comment): reconnect.
  absl::Duration idle_timeout = absl::Seconds(120);
};

// What one URL is doing, and its counters since the connector started.
struct UrlStatus {
  std::string url;
  // connecting, streaming, backing-off, gap (streaming again after an
  // absence longer than the feed's retention), failed (on_error stop),
  // ended (the server answered 204: the feed asked not to reconnect),
  // stopped.
  std::string state;
  std::string last_event_id;  // the resume point, as committed
  Position last_position;     // of the last event committed
  int64_t last_commit_unix_micros = 0;
  uint64_t events = 0;  // committed: applied + duplicates + conflicts
  uint64_t applied = 0;
  uint64_t duplicates = 0;  // re-sent events (after a reconnect, a restart)
  uint64_t skipped = 0;     // records rejected under on_error skip
  uint64_t reconnects = 0;
  uint64_t gaps = 0;
  std::string last_error;
  int64_t last_error_unix_micros = 0;
};

struct ConnectorStatus {
  std::string name;
  std::string state;  // the worst of its URLs' (failed, gap, backing-off, connecting, ...)
  std::vector<UrlStatus> urls;
};

}  // namespace cairn::connectors

#endif  // CAIRN_CONNECTOR_H_
