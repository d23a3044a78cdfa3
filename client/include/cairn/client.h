// cairn::client — C++ client for cairnd. The public API uses the engine's
// plain types (cairn/event.h, cairn/options.h, cairn/source.h) and absl
// statuses; no generated proto or gRPC type appears here.
//
// Thread safety: a Client may be shared by threads. IngestStream and
// ClientSubscription are used by one thread at a time, except that one
// thread may Send while another Receives on the same IngestStream (a
// producer that does not wait for each ack); Close it once neither is.
//
// Retries: unary calls and ingest batches are retried on UNAVAILABLE with
// exponential backoff (ingest is idempotent: a batch whose ack was lost comes
// back as duplicates). Subscriptions resume after the last delivered seq.
#ifndef CAIRN_CLIENT_H_
#define CAIRN_CLIENT_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cairn/backup.h"
#include "cairn/connector.h"
#include "cairn/event.h"
#include "cairn/options.h"
#include "cairn/source.h"
#include "cairn/stats.h"

namespace cairn::client {

struct ClientOptions {
  std::string target = "127.0.0.1:50051";
  std::string token;          // sent as "authorization: Bearer <token>"
  std::string tls_ca_file;    // PEM roots; TLS when set
  std::string tls_cert_file;  // PEM client cert/key for mutual TLS
  std::string tls_key_file;
  int max_attempts = 5;  // per call, for UNAVAILABLE
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration call_timeout = absl::Seconds(60);  // unary calls
  int max_message_bytes = 64 << 20;
  // How long a subscription keeps reconnecting after the server went away.
  absl::Duration reconnect_window = absl::Seconds(30);
};

// A failed batch carries the per-record problems the server named.
struct RecordError {
  uint64_t index = 0;
  std::string field;
  std::string reason;
};

struct ServerStats {
  StoreStats store;
  struct Subscription {
    uint64_t id = 0;
    uint64_t delivered_seq = 0;
    uint64_t lag = 0;
  };
  std::vector<Subscription> subscriptions;
  std::map<std::string, uint64_t> checkpoints;
  std::vector<connectors::SinkStatus> sinks;  // state, checkpoint, lag
};

// Where a subscription starts.
struct SubscribeStart {
  enum class Kind { kNow, kFromSeq, kSnapshot, kCheckpoint };
  Kind kind = Kind::kNow;
  uint64_t from_seq = 0;
  std::string checkpoint;
};

// Whether a status from IngestStream::Send/Receive says the stream itself
// ended (its batches in flight have no answer), as opposed to one batch's
// error from its acknowledgement (a full disk is RESOURCE_EXHAUSTED there).
bool StreamEnded(const absl::Status& s);

// A pipelined ingest stream: Send() queues batches, Receive() returns their
// results in order. Use Ingest()/IngestPayload() on Client for one-shot calls.
class IngestStream {
 public:
  virtual ~IngestStream() = default;
  virtual absl::Status Send(std::vector<Event> events, bool durable) = 0;
  virtual absl::Status SendPayload(std::string_view source, std::string payload, bool durable) = 0;
  // The next batch's result: its IngestResult, or its error (errors, if not
  // null, receives the per-record problems).
  virtual absl::StatusOr<IngestResult> Receive(std::vector<RecordError>* errors = nullptr) = 0;
  // Half-closes and returns the stream's final status.
  virtual absl::Status Close() = 0;
};

class ClientSubscription {
 public:
  virtual ~ClientSubscription() = default;
  // Next item, waiting up to `timeout` (false on timeout). Reconnects on
  // UNAVAILABLE and continues after the last delivered change seq; a drop
  // in the middle of the snapshot part returns UNAVAILABLE (a snapshot is
  // not resumable — subscribe again).
  virtual absl::StatusOr<bool> Next(absl::Duration timeout, SubscriptionItem* item) = 0;
  // Seq of the last change delivered.
  virtual uint64_t last_seq() const = 0;
  virtual void Cancel() = 0;
};

class Client {
 public:
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  virtual ~Client() = default;

  // --- Ingest
  virtual absl::StatusOr<std::unique_ptr<IngestStream>> OpenIngestStream(bool payloads) = 0;
  virtual absl::StatusOr<IngestResult> Ingest(std::vector<Event> events, bool durable,
                                              std::vector<RecordError>* errors = nullptr) = 0;
  virtual absl::StatusOr<IngestResult> IngestPayload(
      std::string_view source, std::string payload, bool durable,
      std::vector<RecordError>* errors = nullptr) = 0;

  // --- Sessions
  virtual absl::StatusOr<std::string> OpenSession(std::string_view source,
                                                  std::string_view collection,
                                                  SessionMode mode) = 0;
  virtual absl::StatusOr<std::vector<std::string>> SessionUpsert(
      std::string_view session_id, const std::vector<SessionRecord>& records) = 0;
  // Raw contribution records in the source's format (e.g. BitBroker JSON).
  virtual absl::StatusOr<std::vector<std::string>> SessionUpsertPayload(std::string_view session_id,
                                                                        std::string payload) = 0;
  virtual absl::StatusOr<std::vector<std::string>> SessionDelete(
      std::string_view session_id, const std::vector<std::string>& keys) = 0;
  // Atomic sessions (SessionMode::kAtomic): stage canonical events, or a
  // payload in the session source's format; nothing is visible until
  // CloseSession(commit=true) applies everything staged as one batch.
  // Returns the number of events the session holds. Retried when cairnd is
  // unavailable (a post staged twice is a duplicate at commit).
  virtual absl::StatusOr<uint64_t> SessionIngest(std::string_view session_id,
                                                 const std::vector<Event>& events) = 0;
  virtual absl::StatusOr<uint64_t> SessionIngestPayload(std::string_view session_id,
                                                        std::string payload) = 0;
  virtual absl::StatusOr<IngestResult> CloseSession(std::string_view session_id, bool commit) = 0;

  // --- Query
  virtual absl::StatusOr<Entity> Get(std::string_view collection, std::string_view key) = 0;
  // Streams the snapshot into `fn` (return false to stop early).
  virtual absl::Status Snapshot(const SnapshotOptions& options,
                                const std::function<bool(const Entity&)>& fn) = 0;
  virtual absl::StatusOr<std::vector<Version>> History(std::string_view collection,
                                                       std::string_view key,
                                                       const HistoryOptions& options) = 0;
  virtual absl::StatusOr<std::unique_ptr<ClientSubscription>> Subscribe(
      const SubscribeFilter& filter, const SubscribeStart& start,
      bool include_incomplete = true) = 0;
  // A checkpoint belongs to the read scope it was created for: the
  // collections given when this call creates it (none: every collection).
  // Committing, reading or resuming from it needs read access to that scope.
  virtual absl::Status CommitCheckpoint(std::string_view name, uint64_t seq,
                                        const std::vector<std::string>& collections = {}) = 0;
  virtual absl::StatusOr<uint64_t> GetCheckpoint(std::string_view name) = 0;

  // --- Admin
  virtual absl::Status PutSource(const SourceDefinition& source) = 0;
  virtual absl::StatusOr<SourceDefinition> GetSource(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<SourceDefinition>> ListSources() = 0;
  virtual absl::Status RemoveSource(std::string_view name) = 0;
  virtual absl::StatusOr<ServerStats> Stats() = 0;
  virtual absl::Status SetRetention(const RetentionOptions& retention) = 0;
  virtual absl::StatusOr<RetentionOptions> GetRetention() = 0;
  virtual absl::Status Compact() = 0;
  // Adds a backup to the server's --backup-dir, or to `dir` under it (a
  // relative path of plain names; admin; FAILED_PRECONDITION when it has
  // none). Waits for it without a deadline and is not retried.
  virtual absl::StatusOr<BackupInfo> Backup(std::string_view dir = {}) = 0;
  // Every checkpoint with its scope (admin); paged under the hood.
  struct CheckpointInfo {
    std::string name;
    uint64_t seq = 0;
    std::vector<std::string> collections;  // empty: every collection
  };
  virtual absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints() = 0;
  virtual absl::Status DeleteCheckpoint(std::string_view name) = 0;
  // The standard gRPC health check: OK when serving.
  // Connectors (README "Connectors and sinks"; admin only). ConnectorStatus with an
  // empty name: every connector's.
  virtual absl::Status PutConnector(const connectors::ConnectorDefinition& d) = 0;
  virtual absl::StatusOr<connectors::ConnectorDefinition> GetConnector(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<connectors::ConnectorDefinition>> ListConnectors() = 0;
  virtual absl::Status RemoveConnector(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<connectors::ConnectorStatus>> ConnectorStatus(
      std::string_view name) = 0;
  // Sinks (README "Connectors and sinks"; admin only). PutSink with from_now: the sink
  // starts after the last committed seq (d.from_seq is ignored). SinkStatus
  // with an empty name: every sink's. ReplayDeadLetters returns how many the
  // destination accepted this time.
  virtual absl::Status PutSink(const connectors::SinkDefinition& d, bool from_now) = 0;
  virtual absl::StatusOr<connectors::SinkDefinition> GetSink(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<connectors::SinkDefinition>> ListSinks() = 0;
  virtual absl::Status RemoveSink(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<connectors::SinkStatus>> SinkStatus(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<connectors::DeadLetter>> ListDeadLetters(
      std::string_view name) = 0;
  virtual absl::StatusOr<uint64_t> ReplayDeadLetters(std::string_view name) = 0;
  virtual absl::Status Health() = 0;
};

}  // namespace cairn::client

#endif  // CAIRN_CLIENT_H_
