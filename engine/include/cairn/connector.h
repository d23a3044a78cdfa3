// Connectors and sinks: their definitions and status (cairn/connectors.h
// runs them); plain value types, shared by the engine side and the remote
// client.
#ifndef CAIRN_CONNECTOR_H_
#define CAIRN_CONNECTOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cairn/event.h"
#include "cairn/options.h"

namespace cairn::connectors {

enum class OnError {
  kStop,  // a record the source's format rejects stops the URL (state failed)
  kSkip,  // it is counted (`skipped`) and reading goes on after it
};

struct ConnectorDefinition {
  std::string name;          // 1-128 of [A-Za-z0-9._-]
  std::string type = "sse";  // sse or nats
  std::string source;        // a registered source; sse: of format sse-feed
  // sse: the feeds, 1 to 16, http:// or https://, read concurrently.
  // nats: the servers of one NATS cluster, nats:// or tls:// (credentials
  // as nats://user:password@host:port).
  std::vector<std::string> urls;
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

  // nats: a JetStream durable pull consumer `consumer` (default
  // "cairn_<name>", dots made underscores) on `stream`, taking the subjects
  // that match `filter_subject` (default: all of the stream's). Each message
  // is one payload in the source's format; `subjects` maps a subject
  // pattern (NATS wildcards * and >) to the collection its records go to,
  // whatever they name (Debezium Server's `prefix.schema.table`); unmapped
  // subjects leave the collection to the format. A message is acknowledged
  // only after the commit holding it.
  std::string stream;
  std::string filter_subject;
  std::string consumer;
  std::map<std::string, std::string> subjects;
};

// What one URL is doing, and its counters since the connector started.
// A nats connector has one: `url` is "<stream>/<consumer>", last_event_id
// the last stream sequence committed.
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

// A sink delivers the change feed, filtered like a subscription, in seq
// order, to a destination (DESIGN §9; README "Connectors and sinks").
struct SinkDefinition {
  std::string name;  // 1-128 of [A-Za-z0-9._-]
  // http: a webhook. nats: JetStream publishes, each with the header
  // Nats-Msg-Id "<name>-<seq>" (omnia-datapoints: "<name>-<first>-<last>"),
  // so that JetStream's duplicate window drops re-sends.
  std::string type = "http";
  std::string url;  // http:// or https://; nats: nats:// or tls:// servers, comma-separated
  std::map<std::string, std::string> headers;
  std::string ca_file;
  // The message shape: cairn, debezium, mia-projection-update or
  // omnia-datapoints (one message per batch, points grouped per series).
  std::string shape = "cairn";
  // nats: the subject, with {collection}, {source} and {sink} replaced.
  std::string subject = "cairn.{collection}";
  // omnia-datapoints: the message's "schema".
  std::string omnia_schema = "equinor/plant/schemas/ingest/datapoints_v2";
  SubscribeFilter filter;
  // A new sink delivers the changes after this seq (cairnd's `--from now`
  // puts the last committed seq here when the sink is created).
  uint64_t from_seq = 0;
  uint32_t batch_changes = 100;  // messages per request at most
  absl::Duration timeout = absl::Seconds(10);
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
};

struct SinkStatus {
  std::string name;
  // delivering, caught-up, backing-off (the destination is down or
  // answered 408, 429 or 5xx), out_of_range (its checkpoint fell out of
  // retention: it stopped), stopped.
  std::string state;
  uint64_t checkpoint_seq = 0;  // every change up to it was acknowledged
  uint64_t lag_seqs = 0;        // last committed seq - checkpoint
  double lag_seconds = 0;       // since the sink was last caught up
  uint64_t delivered = 0;       // since cairnd started
  uint64_t retries = 0;
  uint64_t dead_letters = 0;  // kept in the store now
  std::string last_error;
  int64_t last_error_unix_micros = 0;
};

// A message the destination rejected for good (4xx other than 408 and 429):
// kept in the store until replayed.
struct DeadLetter {
  uint64_t seq = 0;
  int http_status = 0;   // nats: 0 (response holds the error)
  std::string response;  // the answer's first 1,000 bytes
  std::string message;   // the message as sent
  std::string subject;   // nats: the subject it was sent to
  int64_t unix_micros = 0;
};

}  // namespace cairn::connectors

#endif  // CAIRN_CONNECTOR_H_
