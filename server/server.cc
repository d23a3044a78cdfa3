// cairnd's server: security checks, the store, the ingest worker, the
// subscription dispatcher and the four services on one grpc::Server.
#include "server.h"

#include <arpa/inet.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "backups.h"
#include "cairn/connectors.h"
#include "cairn/status.h"
#include "dispatcher.h"
#include "http_server.h"
#include "ingest_worker.h"
#include "service.h"

namespace cairn::server {

Caller CallerOf(const grpc::CallbackServerContext* ctx) {
  Caller caller{.peer = ctx->peer()};
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    caller.authorization.emplace(it->second.data(), it->second.size());
  }
  return caller;
}

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
}

std::string Bytes(const grpc::ByteBuffer& buf) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (buf.Dump(&slices).ok()) {
    for (const grpc::Slice& sl : slices) {
      bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
  }
  return bytes;
}

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What cairnd's own memory takes off the store's budget: the subscribers'
// buffer, and headroom (an eighth of the budget) for what no one accounts
// for -- gRPC's buffers per connection and what the allocator keeps of freed
// messages. bench/resources, 1M upserts then 100 subscribers, two snapshots
// and 100k more upserts under a 256 MiB budget: peak RSS 339 MiB with the
// subscribers' buffer alone reserved (the store's cache, memtables and ring
// within the budget, the rest outside it), 300 MiB with the headroom.
constexpr size_t kHeadroomShare = 8;
size_t Headroom(const ServerOptions& o) { return o.memory_budget / kHeadroomShare; }
size_t Reserved(const ServerOptions& o) {
  return o.memory_budget ? o.subscriber_buffer_bytes + Headroom(o) : 0;
}

// The subscribers' buffer (0: its default), which with the headroom may take
// at most half the budget.
absl::Status ResolveBuffers(ServerOptions* o) {
  if (o->subscriber_buffer_bytes == 0) {
    // At least 2 MiB: the store refuses a budget below 16 MiB.
    o->subscriber_buffer_bytes = o->memory_budget ? o->memory_budget / 8 : 64 << 20;
  }
  if (Reserved(*o) > o->memory_budget / 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--subscriber-buffer-mib ", o->subscriber_buffer_bytes >> 20,
        " exceeds half of --memory-budget (", o->memory_budget >> 20, " MiB) less cairnd's ",
        Headroom(*o) >> 20, " MiB of headroom for gRPC's buffers (an eighth of the budget)"));
  }
  return absl::OkStatus();
}

// DESIGN §7 Security: what is served is said, never implied.
absl::Status CheckSecurity(const ServerOptions& o) {
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!o.tls_client_ca_file.empty() && o.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first");
  }
  bool open = o.tokens_file.empty() && o.tls_cert_file.empty();
  // The gRPC and the HTTP listener alike (the HTTP one serves the same
  // store, with the same tokens and certificate).
  for (const std::string& listen : {o.listen, o.http_listen}) {
    if (listen.empty() || IsLoopback(listen)) continue;
    if (open) {
      if (!o.insecure_allow_remote) {
        return absl::FailedPreconditionError(absl::StrCat(
            "refusing to listen on ", listen,
            " (not loopback) without --tokens or --tls-cert: anyone who can reach it could "
            "read and write everything; give --insecure-allow-remote if that is what you want"));
      }
      spdlog::warn(
          "listening on {} (not loopback) with no tokens and no TLS "
          "(--insecure-allow-remote): every caller may read and write everything",
          listen);
    } else if (o.tokens_file.empty()) {
      spdlog::warn(
          "listening on {} with TLS but no tokens: every caller that can connect may "
          "read and write everything",
          listen);
    }
  }
  return absl::OkStatus();
}

class ServerImpl : public Server {
 public:
  ~ServerImpl() override { Shutdown(); }

  absl::Status Init(const ServerOptions& options) {
    options_ = options;
    CAIRN_RETURN_IF_ERROR(CheckSecurity(options_));
    CAIRN_RETURN_IF_ERROR(ResolveBuffers(&options_));
    if (!options_.tokens_file.empty()) {
      CAIRN_ASSIGN_OR_RETURN(auth_, Auth::FromFile(options_.tokens_file));
    }
    if (!options_.restore_from.empty()) {
      CAIRN_ASSIGN_OR_RETURN(BackupInfo b, backup::Restore(options_.restore_from, options_.data_dir,
                                                           options_.restore_backup_id));
      spdlog::info("restored backup {} (seq {}) from {} into {}", b.id, b.seq,
                   options_.restore_from, options_.data_dir);
    }
    CAIRN_ASSIGN_OR_RETURN(
        store_, Store::Open(options_.data_dir, Options{.retention = options_.retention,
                                                       .memory_budget = options_.memory_budget,
                                                       .reserved_bytes = Reserved(options_)}));
    if (std::string recovery = store_->Stats().recovery; !recovery.empty()) {
      spdlog::warn("recovered {}: {}", options_.data_dir, recovery);
    }
    deps_.store = store_.get();
    // The connectors kept in the store start reading now (README
    // "Connectors").
    CAIRN_ASSIGN_OR_RETURN(connectors_, connectors::Connectors::Start(store_.get()));
    deps_.connectors = connectors_.get();
    worker_ = std::make_unique<IngestWorker>(store_.get());
    deps_.worker = worker_.get();
    deps_.auth = &auth_;
    deps_.options = &options_;
    dispatcher_ = std::make_unique<Dispatcher>(&deps_);
    ingest_ = NewIngestService(&deps_);
    sessions_ = NewSessionsService(&deps_);
    query_ = NewQueryService(&deps_, dispatcher_.get());
    admin_ = NewAdminService(&deps_, dispatcher_.get());
    backups_ = std::make_unique<BackupScheduler>(store_.get(), &options_);

    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
      grpc::SslServerCredentialsOptions ssl;
      CAIRN_ASSIGN_OR_RETURN(std::string cert, ReadFile(options_.tls_cert_file, "TLS cert"));
      CAIRN_ASSIGN_OR_RETURN(std::string key, ReadFile(options_.tls_key_file, "TLS key"));
      ssl.pem_key_cert_pairs.push_back({key, cert});
      if (!options_.tls_client_ca_file.empty()) {
        CAIRN_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                               ReadFile(options_.tls_client_ca_file, "client CA"));
        ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      }
      creds = grpc::SslServerCredentials(ssl);
    }
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen, creds, &port_);
    builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
    builder.SetMaxSendMessageSize(options_.max_message_bytes);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(sessions_.get());
    builder.RegisterService(query_.get());
    builder.RegisterService(admin_.get());
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen));
    }
    spdlog::info("cairnd listening on {} (port {}), data in {}, auth {}, tls {}", options_.listen,
                 port_, options_.data_dir, auth_.enabled() ? "on" : "off",
                 options_.tls_cert_file.empty() ? "off" : "on");
    if (!options_.http_listen.empty()) {
      CAIRN_ASSIGN_OR_RETURN(http_,
                             HttpServer::Start(options_.http_listen, &deps_, dispatcher_.get()));
      spdlog::info("HTTP API on {} (port {})", options_.http_listen, http_->port());
    }
    return absl::OkStatus();
  }

  int port() const override { return port_; }
  int http_port() const override { return http_ ? http_->port() : 0; }

  void Shutdown() override {
    if (shut_down_.exchange(true)) {
      done_.WaitForNotification();
      return;
    }
    spdlog::info("shutting down: finishing in-flight batches, ending subscriptions");
    deps_.shutting_down.store(true);
    // Before the store: its connections hold subscriptions.
    if (http_) http_->Shutdown();
    http_.reset();
    if (server_) {
      server_->GetHealthCheckService()->SetServingStatus(false);
      dispatcher_->EndAll();
      // Calls still running after 2 s are cancelled; a batch already inside
      // the engine completes regardless (its ack may be lost; a retry then
      // reports duplicates).
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    }
    if (dispatcher_) dispatcher_->Stop();
    server_.reset();
    if (worker_) worker_->Stop();
    if (connectors_) connectors_->Stop();  // each commits what it read
    backups_.reset();                      // a scheduled backup under way finishes first
    store_.reset();
    spdlog::info("store closed");
    done_.Notify();
  }

  void Wait() override { done_.WaitForNotification(); }

 private:
  ServerOptions options_;
  Auth auth_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<IngestWorker> worker_;
  std::unique_ptr<connectors::Connectors> connectors_;
  std::unique_ptr<HttpServer> http_;
  Deps deps_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<grpc::Service> ingest_;
  std::unique_ptr<grpc::Service> sessions_;
  std::unique_ptr<grpc::Service> query_;
  std::unique_ptr<grpc::Service> admin_;
  std::unique_ptr<BackupScheduler> backups_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> shut_down_{false};
  absl::Notification done_;
};

}  // namespace

bool IsLoopback(std::string_view listen) {
  if (listen.substr(0, 5) == "unix:") return true;
  std::string_view host = listen;
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') == std::string_view::npos ? 0 : host.find(']') - 1);
    return host == "::1";
  }
  if (size_t colon = host.rfind(':'); colon != std::string_view::npos) host = host.substr(0, colon);
  if (host == "localhost") return true;
  // A numeric 127.0.0.0/8 address, not a host name that starts with "127.".
  in_addr a{};
  return inet_pton(AF_INET, std::string(host).c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  auto server = std::make_unique<ServerImpl>();
  CAIRN_RETURN_IF_ERROR(server->Init(options));
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace cairn::server
