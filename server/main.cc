// cairnd: the cairn gRPC server. With no flags it serves ./data on
// 127.0.0.1:50051 (loopback only), without TLS or auth.
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "cairn/version.h"
#include "server.h"

// glibc raises its mmap threshold each time a mapped chunk is freed, so the
// memtables' arena blocks (about a megabyte each) soon come from the heap
// and, once freed between cached blocks, stay in the process's RSS: 1M
// upserts under the default 256 MiB budget peaked at 342 MiB RSS with the
// dynamic threshold, 304 MiB with this fixed one (bench/resources). Blocks
// of the cache are far below it and stay on the heap.
constexpr int kMmapThreshold = 256 << 10;

int main(int argc, char** argv) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
#endif
  cairn::server::ServerOptions o;
  uint64_t retention_seconds = 0;
  uint64_t retention_commits = 0;
  CLI::App app{"cairnd: event-sourced state store server"};
  app.set_version_flag("--version", std::string("cairnd ") + cairn::kVersion);
  app.add_option("--listen", o.listen, "address:port to listen on")->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "store directory")->capture_default_str();
  app.add_option("--retention-seconds", retention_seconds,
                 "keep log/history/changes this long (0: keep all)");
  app.add_option("--retention-commits", retention_commits,
                 "keep the last N commits of the change feed (0: keep all)");
  app.add_flag("--durable", o.durable, "fsync every batch before acknowledging it");
  app.add_option("--memory-budget", o.memory_budget,
                 "memory for the block cache, memtables and the recent-changes ring, e.g. 256MiB "
                 "(also bounds the WAL); 0: no budget")
      ->transform(CLI::AsSizeValue(false))
      ->default_str("256MiB");
  app.add_option("--max-message-bytes", o.max_message_bytes, "largest accepted message")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--tls-cert", o.tls_cert_file, "PEM server certificate (enables TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", o.tls_key_file, "PEM server private key")->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", o.tls_client_ca_file, "PEM CA for client certs (mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--tokens", o.tokens_file, "bearer tokens file (JSON; enables auth)")
      ->check(CLI::ExistingFile);
  app.add_flag("--insecure-allow-remote", o.insecure_allow_remote,
               "serve a non-loopback --listen address without --tokens or TLS");
  app.add_option("--max-subscriptions", o.max_subscriptions,
                 "open subscriptions and snapshot streams at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-ingest-streams", o.max_ingest_streams, "open ingest streams at most")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  uint64_t subscriber_buffer_mib = o.subscriber_buffer_bytes >> 20;
  app.add_option("--subscriber-buffer-mib", subscriber_buffer_mib,
                 "MiB of messages in flight to all subscribers together, part of "
                 "--memory-budget (0: an eighth of it; 64 without a budget)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 16));
  uint64_t stall_seconds = absl::ToInt64Seconds(o.subscriber_stall_timeout);
  app.add_option("--subscriber-stall-seconds", stall_seconds,
                 "cut off a subscriber that takes no message for this long")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  app.add_option("--backup-dir", o.backup_dir,
                 "where Admin.Backup (cairn backup create) and the scheduled backups go");
  uint64_t backup_interval_seconds = 0;
  app.add_option("--backup-interval", backup_interval_seconds,
                 "take a backup into --backup-dir every N seconds (0: only when asked)")
      ->check(CLI::Range(uint64_t{0}, uint64_t{366} * 86400));
  app.add_option("--backup-keep", o.backup_keep,
                 "after each backup keep only the newest N in --backup-dir (0: keep all)")
      ->check(CLI::Range(0, 100000));
  app.add_option("--restore-from", o.restore_from,
                 "first restore --data-dir (which must be absent or empty) from the newest "
                 "backup in this directory, then serve it")
      ->check(CLI::ExistingDirectory);
  uint32_t restore_backup_id = 0;
  app.add_option("--backup-id", restore_backup_id,
                 "with --restore-from: restore this backup instead of the newest")
      ->check(CLI::PositiveNumber);
  app.add_option("--http-listen", o.http_listen,
                 "the HTTP API's address, host:port (default: none; make run: 127.0.0.1:8080)");
  std::string port_file;
  app.add_option("--port-file", port_file,
                 "write the bound port here once serving (for --listen host:0)");
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (backup_interval_seconds > 0 && o.backup_dir.empty()) {
    std::cerr << "--backup-interval: needs --backup-dir\n";
    return 2;
  }
  if (restore_backup_id != 0 && o.restore_from.empty()) {
    std::cerr << "--backup-id: needs --restore-from\n";
    return 2;
  }
  o.backup_interval = absl::Seconds(static_cast<int64_t>(backup_interval_seconds));
  if (restore_backup_id != 0) o.restore_backup_id = restore_backup_id;

  spdlog::set_level(spdlog::level::from_str(log_level));
  o.subscriber_buffer_bytes = subscriber_buffer_mib << 20;
  o.subscriber_stall_timeout = absl::Seconds(static_cast<int64_t>(stall_seconds));
  if (retention_seconds) o.retention.max_age = absl::Seconds(retention_seconds);
  if (retention_commits) o.retention.max_commits = retention_commits;

  // Signals are taken by one thread with sigwait, so every other thread
  // (gRPC's, RocksDB's) must have them blocked: block before starting any.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = cairn::server::Server::Start(o);
  if (!server.ok()) {
    spdlog::error("cannot start: {}", std::string(server.status().message()));
    return absl::IsInvalidArgument(server.status()) || absl::IsFailedPrecondition(server.status())
               ? 2
               : 1;
  }
  if (!port_file.empty()) {
    // Write then rename, so a reader never sees a partial file.
    std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << (*server)->port() << "\n";
    if ((*server)->http_port() != 0) {
      std::string http_tmp = port_file + ".http.tmp", http = port_file + ".http";
      std::ofstream(http_tmp) << (*server)->http_port() << "\n";
      std::rename(http_tmp.c_str(), http.c_str());
    }
    std::rename(tmp.c_str(), port_file.c_str());
  }
  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown();
  return 0;
}
