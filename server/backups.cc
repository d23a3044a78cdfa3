#include "backups.h"

#include <spdlog/spdlog.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cairn/status.h"

namespace cairn::server {

namespace {

constexpr size_t kMaxSubdirBytes = 255;

// `subdir` is a relative path of plain names: nothing absolute, no "." or
// "..", so a backup cannot leave --backup-dir.
absl::Status CheckSubdir(absl::string_view subdir) {
  if (subdir.size() > kMaxSubdirBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("dir: ", subdir.size(), " bytes, at most ", kMaxSubdirBytes));
  }
  if (subdir.front() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("dir '", subdir, "': must be relative to cairnd's --backup-dir"));
  }
  for (absl::string_view part : absl::StrSplit(subdir, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("dir '", subdir,
                       "': plain names only (no empty, '.' or '..' parts), under --backup-dir"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BackupInfo> TakeBackup(Store& store, const ServerOptions& options,
                                      std::string_view subdir) {
  if (options.backup_dir.empty()) {
    return absl::FailedPreconditionError(
        "cairnd was started without --backup-dir: there is nowhere to put a backup");
  }
  std::string dir = options.backup_dir;
  if (!subdir.empty()) {
    const absl::string_view sub(subdir.data(), subdir.size());
    CAIRN_RETURN_IF_ERROR(CheckSubdir(sub));
    absl::StrAppend(&dir, "/", sub);
  }
  absl::StatusOr<BackupInfo> b = store.Backup(dir);
  if (!b.ok()) {
    spdlog::error("backup into {} failed: {}", dir, std::string(b.status().message()));
    return b;
  }
  spdlog::info("backup {} into {}: seq {}, {} bytes, {} of them copied", b->id, dir, b->seq,
               b->size_bytes, b->copied_bytes);
  if (options.backup_keep > 0) {
    auto pruned = backup::Prune(dir, options.backup_keep);
    if (!pruned.ok()) {
      spdlog::error("pruning {} to {} backups failed: {}", dir, options.backup_keep,
                    std::string(pruned.status().message()));
    } else if (!pruned->empty()) {
      spdlog::info("pruned backups {} from {}", absl::StrJoin(*pruned, ", "), dir);
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
