// The backups cairnd takes into --backup-dir: on Admin.Backup and, with
// --backup-interval, on a schedule; each followed by pruning to
// --backup-keep (README "Backup and restore").
#ifndef CAIRN_SERVER_BACKUPS_H_
#define CAIRN_SERVER_BACKUPS_H_

#include <string_view>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cairn/backup.h"
#include "cairn/store.h"
#include "server.h"

namespace cairn::server {

// Adds a backup of `store` to options.backup_dir, or to `subdir` under it
// (relative, plain names only: INVALID_ARGUMENT otherwise), then prunes that
// directory to options.backup_keep backups (when set; a failed prune is
// logged, the backup stands). FAILED_PRECONDITION when cairnd has no
// --backup-dir.
absl::StatusOr<BackupInfo> TakeBackup(Store& store, const ServerOptions& options,
                                      std::string_view subdir = {});

// Takes a backup every options.backup_interval (none when it is zero),
// until destroyed; a backup under way when it is destroyed is finished.
class BackupScheduler {
 public:
  BackupScheduler(Store* store, const ServerOptions* options);
  ~BackupScheduler();
  BackupScheduler(const BackupScheduler&) = delete;
  BackupScheduler& operator=(const BackupScheduler&) = delete;

 private:
  void Loop();

  Store* const store_;
  const ServerOptions* const options_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_BACKUPS_H_
