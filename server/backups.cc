#include "backups.h"

#include <spdlog/spdlog.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cairn::server {

absl::StatusOr<BackupInfo> TakeBackup(Store& store, const ServerOptions& options) {
  if (options.backup_dir.empty()) {
    return absl::FailedPreconditionError(
        "cairnd was started without --backup-dir: there is nowhere to put a backup");
  }
  absl::StatusOr<BackupInfo> b = store.Backup(options.backup_dir);
  if (!b.ok()) {
    spdlog::error("backup into {} failed: {}", options.backup_dir,
                  std::string(b.status().message()));
    return b;
  }
  spdlog::info("backup {} into {}: seq {}, {} bytes, {} of them copied", b->id, options.backup_dir,
               b->seq, b->size_bytes, b->copied_bytes);
  if (options.backup_keep > 0) {
    auto pruned = backup::Prune(options.backup_dir, options.backup_keep);
    if (!pruned.ok()) {
      spdlog::error("pruning {} to {} backups failed: {}", options.backup_dir, options.backup_keep,
                    std::string(pruned.status().message()));
    } else if (!pruned->empty()) {
      spdlog::info("pruned backups {} from {}", absl::StrJoin(*pruned, ", "), options.backup_dir);
    }
  }
  return b;
}

BackupScheduler::BackupScheduler(Store* store, const ServerOptions* options)
    : store_(store), options_(options) {
  if (options_->backup_dir.empty() || options_->backup_interval <= absl::ZeroDuration()) return;
  thread_ = std::thread([this] { Loop(); });
}

BackupScheduler::~BackupScheduler() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void BackupScheduler::Loop() {
  absl::MutexLock l(&mu_);
  while (true) {
    const absl::Time next = absl::Now() + options_->backup_interval;
    if (mu_.AwaitWithDeadline(absl::Condition(&stop_), next)) return;
    mu_.Unlock();
    (void)TakeBackup(*store_, *options_);  // logged there; counted in Stats
    mu_.Lock();
  }
}

}  // namespace cairn::server
