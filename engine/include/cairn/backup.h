// Backups of a store (README "Backup and restore"): consistent as of one
// commit seq, taken while the store serves, incremental (unchanged files are
// shared between the backups in a directory), verified by checksums and by
// opening them, and restorable into a new data directory.
//
// A backup directory holds any number of backups, each with an id (1, 2,
// ...). Store::Backup adds one; the functions below read, check, prune and
// restore them without a running store, so an operator can verify a backup
// on another machine before restoring it there.
#ifndef CAIRN_BACKUP_H_
#define CAIRN_BACKUP_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cairn {

struct BackupInfo {
  uint32_t id = 0;
  // The backup holds exactly the commits up to and including this seq.
  uint64_t seq = 0;
  absl::Time created;
  // Bytes of the files this backup consists of (shared ones included), and
  // how many of them it copied when it was taken (its new files only; 0
  // from ListBackups).
  uint64_t size_bytes = 0;
  uint64_t copied_bytes = 0;
  uint32_t files = 0;
  uint64_t format_version = 0;  // the store format it was written in
  std::string cairn_version;
};

namespace backup {

// Every backup in `dir`, oldest first. NOT_FOUND when `dir` holds none.
absl::StatusOr<std::vector<BackupInfo>> List(std::string_view dir);

// Checks backup `id` (the newest when absent): every file's size and
// checksum against those recorded when it was taken, then restores it into
// a scratch directory beside `dir` and opens it: its last seq must be the
// recorded one and every block of every table must read back with its
// checksum. DATA_LOSS naming the file on a mismatch.
absl::StatusOr<BackupInfo> Verify(std::string_view dir, std::optional<uint32_t> id = std::nullopt);

// Deletes all but the newest `keep` backups (at least 1), and the files only
// they used; returns the ids deleted.
absl::StatusOr<std::vector<uint32_t>> Prune(std::string_view dir, uint32_t keep);

// Restores backup `id` (the newest when absent) into `target`, which must
// not exist or be empty. Crash-safe: the files are restored and checked in
// `target`.restoring, which is renamed to `target` only once the restored
// store has opened with the backup's seq; a restore cut short leaves
// `target`.restoring behind, and Store::Open refuses `target` while it
// exists (a store that opened there would not be the backup).
absl::StatusOr<BackupInfo> Restore(std::string_view dir, std::string_view target,
                                   std::optional<uint32_t> id = std::nullopt);

}  // namespace backup
}  // namespace cairn

#endif  // CAIRN_BACKUP_H_
