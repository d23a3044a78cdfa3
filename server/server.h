// cairnd's gRPC server: the four cairn.v1 services on the callback API, the
// standard health service and server reflection, over one cairn::Store.
#ifndef CAIRN_SERVER_SERVER_H_
#define CAIRN_SERVER_SERVER_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cairn/store.h"

namespace cairn::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  // The HTTP API's address (README "HTTP API"); empty: none.
  std::string http_listen;
  std::string data_dir = "./data";
  RetentionOptions retention;
  size_t memory_budget = 256 << 20;  // Options::memory_budget
  bool durable = false;              // fsync every batch, whatever it asks
  int max_message_bytes = 16 << 20;  // larger messages: RESOURCE_EXHAUSTED
  std::string tls_cert_file;         // PEM; TLS when set (with the key)
  std::string tls_key_file;
  std::string tls_client_ca_file;  // PEM; set for mutual TLS
  std::string tokens_file;         // see auth.h; auth on when set
  // A listen address off loopback is refused without tokens or TLS unless
  // this is set (then it is served with a warning in the log).
  bool insecure_allow_remote = false;

  // Server-wide bounds (DESIGN §7 Limits). Past a count, a new stream is
  // refused with RESOURCE_EXHAUSTED naming the flag.
  int max_subscriptions = 1024;
  int max_ingest_streams = 256;
  // Bytes of subscription messages in flight to clients, all subscribers
  // together: a subscriber waits (and later reads the stored change feed)
  // while they are used up. 0: an eighth of memory_budget (64 MiB without a
  // budget). Under a budget they are part of it (Options::reserved_bytes):
  // the block cache gets that much less.
  size_t subscriber_buffer_bytes = 0;
  // A subscriber whose message has not been taken for this long is cut off
  // (its stream is cancelled; it may resume from its last seq).
  absl::Duration subscriber_stall_timeout = absl::Seconds(60);

  // Backups (README "Backup and restore"). Admin.Backup and the schedule
  // write into backup_dir; every backup_interval (zero: none) one is taken;
  // after each, all but the newest backup_keep are deleted (0: keep all).
  std::string backup_dir;
  absl::Duration backup_interval = absl::ZeroDuration();
  uint32_t backup_keep = 0;
  // When set, data_dir (absent or empty) is first restored from the newest
  // backup in restore_from, or from backup restore_backup_id.
  std::string restore_from;
  std::optional<uint32_t> restore_backup_id;
};

// True for 127.0.0.0/8, [::1], localhost and unix sockets.
bool IsLoopback(std::string_view listen);

class Server {
 public:
  // Opens the store and starts serving. Fails if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options);
  virtual ~Server() = default;

  // The bound port (useful with "127.0.0.1:0").
  virtual int port() const = 0;
  // The HTTP API's bound port; 0 without one.
  virtual int http_port() const = 0;
  // Graceful: stops accepting calls, lets in-flight batches finish, ends
  // subscriptions with UNAVAILABLE, then closes the store. Idempotent.
  virtual void Shutdown() = 0;
  // Blocks until Shutdown() completes.
  virtual void Wait() = 0;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SERVER_H_
