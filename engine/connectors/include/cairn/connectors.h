// cairn::connectors — inbound connectors: named, persisted objects that pull
// a live feed into a registered source (DESIGN §9; README "Connectors and sinks").
// They run in cairnd and in any program that embeds the store:
//
//   auto connectors = cairn::connectors::Connectors::Start(store.get());
//   (*connectors)->Put({.name = "aria", .source = "billing",
//                       .urls = {"https://aria.example/load", "https://aria.example/change"},
//                       .headers = {{"Authorization", "Bearer ..."}},
//                       .retention = absl::Hours(48)});
//
// Type `sse`: Server-Sent Events over HTTP(S) (libcurl), one thread per URL,
// all into one source of format `sse-feed`. Each URL's resume point (the
// last `id:`) is committed in the same atomic write as the events it
// delivered (a side record, IngestOptions::side_records), and sent back as
// Last-Event-ID on reconnect, so a restart resumes exactly; re-sent events
// are duplicates. Reconnects back off exponentially with jitter, from the
// stream's `retry:` when it gave one.
#ifndef CAIRN_CONNECTORS_H_
#define CAIRN_CONNECTORS_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cairn/connector.h"
#include "cairn/store.h"

namespace cairn::connectors {

// The definition as JSON (what cairnd's Admin API and the store keep):
// {"name", "type", "source", "urls", "headers", "ca_file",
//  "retention_seconds", "batch_events", "batch_millis", "durable",
//  "on_error": "stop"|"skip", "initial_backoff_millis", "max_backoff_millis",
//  "idle_timeout_seconds", and for nats "stream", "filter_subject",
//  "consumer", "subjects"}; absent fields take cairn/connector.h's defaults.
std::string ToJson(const ConnectorDefinition& d);
// INVALID_ARGUMENT naming the field for JSON that is not a definition.
absl::StatusOr<ConnectorDefinition> FromJson(std::string_view json);
// INVALID_ARGUMENT naming the field for a definition out of its bounds.
absl::Status Check(const ConnectorDefinition& d);

// A nats connector's JetStream consumer name: `consumer`, else
// "cairn_<name>" with dots made underscores.
std::string ConsumerName(const ConnectorDefinition& d);
// Whether a NATS subject matches a pattern (`*` one token, `>` the rest).
bool SubjectMatches(std::string_view pattern, std::string_view subject);

// A sink's definition as JSON: {"name", "type", "url", "headers", "ca_file",
// "shape", "subject" (nats), "omnia_schema", "sources", "collections", "key_prefix", "keys",
// "from_seq", "batch_changes", "timeout_millis", "initial_backoff_millis", "max_backoff_millis"};
// absent fields take cairn/connector.h's defaults.
std::string SinkToJson(const SinkDefinition& d);
absl::StatusOr<SinkDefinition> SinkFromJson(std::string_view json);
absl::Status CheckSink(const SinkDefinition& d);

// One change as a sink sends it, in `shape` (cairn, debezium,
// mia-projection-update); `sink` names the sink in the message's id and
// provenance.
std::string RenderChange(std::string_view shape, std::string_view sink, const Change& c);
// Changes in the omnia-datapoints shape: {"data":{"items":[{"id",
// "datapoints":[{"time","value","status"}...]}...]},"schema"}, one item per
// series (the change's key, a JSON string's text) in the order they first
// appear, each series' points in seq order. Deletes carry no point and are
// left out; empty when no change is left.
std::string RenderDatapoints(std::string_view schema, const std::vector<Change>& changes);

// Runs the connectors and the sinks of one store.
class Connectors {
 public:
  // Starts every connector whose definition the store holds. The store must
  // outlive the returned object.
  static absl::StatusOr<std::unique_ptr<Connectors>> Start(Store* store);
  virtual ~Connectors() = default;  // stops them

  // Creates or replaces (restarting it) a connector; the definition is kept
  // in the store. INVALID_ARGUMENT for a bad definition, NOT_FOUND for an
  // unknown source, FAILED_PRECONDITION for a source of another format.
  virtual absl::Status Put(const ConnectorDefinition& d) = 0;
  virtual absl::StatusOr<ConnectorDefinition> Get(std::string_view name) = 0;
  virtual std::vector<ConnectorDefinition> List() = 0;
  // Stops it and deletes its definition and resume points (NOT_FOUND if none).
  virtual absl::Status Remove(std::string_view name) = 0;
  virtual absl::StatusOr<ConnectorStatus> Status(std::string_view name) = 0;
  virtual std::vector<ConnectorStatus> StatusAll() = 0;

  // Sinks. PutSink creates or replaces (restarting it, from its checkpoint
  // when it has one) a sink; RemoveSink also forgets its checkpoint and dead
  // letters. ReplayDeadLetters sends each again, once; those the destination
  // accepts leave the list. It returns how many did.
  virtual absl::Status PutSink(const SinkDefinition& d) = 0;
  virtual absl::StatusOr<SinkDefinition> GetSink(std::string_view name) = 0;
  virtual std::vector<SinkDefinition> ListSinks() = 0;
  virtual absl::Status RemoveSink(std::string_view name) = 0;
  virtual absl::StatusOr<SinkStatus> GetSinkStatus(std::string_view name) = 0;
  virtual std::vector<SinkStatus> SinkStatusAll() = 0;
  virtual absl::StatusOr<std::vector<DeadLetter>> ListDeadLetters(std::string_view name) = 0;
  virtual absl::StatusOr<size_t> ReplayDeadLetters(std::string_view name) = 0;

  // Stops every connector (each commits what it read) and sink; idempotent.
  virtual void Stop() = 0;
};

}  // namespace cairn::connectors

#endif  // CAIRN_CONNECTORS_H_
