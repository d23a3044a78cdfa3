// Backups (cairn/backup.h; README "Backup and restore").
//
// How a backup is taken (StoreImpl::Backup), without stopping the store:
//  1. a RocksDB checkpoint of the live store into <data>/backup.tmp: its
//     tables hard-linked, its MANIFEST and newest WAL copied, no flush, so
//     the writers never wait. It is a consistent cut of the RocksDB write
//     sequence; a commit is one write that carries the meta last seq, so
//     the cut holds whole commits up to some seq.
//  2. that checkpoint opened as a store of its own (the staging store):
//     recovery replays the copied WAL (a commit torn by the cut is dropped
//     whole), and its last seq is exactly the commits the backup holds.
//  3. RocksDB's BackupEngine backs the staging store up into the backup
//     directory, flushing it first, so a backup is tables only: table files
//     are named by content (db session id, file number, size) and shared
//     between the backups in the directory, so a backup copies only the
//     tables that are new since the last one. The engine records each
//     file's size and CRC32C in the backup's meta file; cairn's own record
//     (seq, format version, cairn version) is the backup's app metadata.
//  4. the staging store closed and backup.tmp removed.
//
// Restore (backup::Restore) goes through <target>.restoring, renamed to
// <target> only once the restored store has opened with the backup's seq;
// Store::Open refuses a <target> beside which a .restoring is left.
#include "cairn/backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "cairn/version.h"
#include "crash_point.h"
#include "json_doc.h"
#include "rocks_status.h"
#include "rocksdb/utilities/backup_engine.h"
#include "rocksdb/utilities/checkpoint.h"
#include "store_impl.h"

namespace cairn {
namespace fs = std::filesystem;
using internal::FromRocks;
using internal::StoreImpl;

namespace {

// cairn's record of a backup, kept as the backup's app metadata.
std::string Metadata(uint64_t seq) {
  return absl::StrCat(R"({"seq":)", seq, R"(,"format_version":)", internal::kFormatVersion,
                      R"(,"cairn_version":")", kVersion, R"("})");
}

absl::StatusOr<BackupInfo> InfoOf(const rocksdb::BackupInfo& b) {
  BackupInfo info;
  info.id = b.backup_id;
  info.created = absl::FromUnixSeconds(b.timestamp);
  info.size_bytes = b.size;
  info.files = b.number_files;
  auto doc = json::Parse(b.app_metadata);
  if (!doc.ok() || !doc->IsObject()) {
    return absl::DataLossError(absl::StrCat("backup ", b.backup_id,
                                            " has no cairn metadata: not a cairn backup, or its "
                                            "meta file is damaged"));
  }
  auto number = [&](const char* name) -> uint64_t {
    auto it = doc->FindMember(name);
    if (it == doc->MemberEnd() || !json::IsNumber(it->value)) return 0;
    std::string text = json::Serialize(it->value);
    return std::strtoull(text.c_str(), nullptr, 10);
  };
  info.seq = number("seq");
  info.format_version = number("format_version");
  if (auto it = doc->FindMember("cairn_version"); it != doc->MemberEnd() && it->value.IsString()) {
    info.cairn_version.assign(it->value.GetString(), it->value.GetStringLength());
  }
  return info;
}

Options ScratchOptions() {
  Options o;
  o.create_if_missing = false;
  o.memory_budget = 32 << 20;
  return o;
}

rocksdb::BackupEngineOptions EngineOptions(std::string_view dir) {
  rocksdb::BackupEngineOptions o{std::string(dir)};
  o.max_background_operations = 2;
  return o;
}

// Reading, checking and pruning need a backup directory that is there (a
// writable engine would create one).
absl::Status MustExist(const std::string& dir) {
  if (fs::is_directory(dir)) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("backup directory ", dir, " does not exist"));
}

absl::StatusOr<std::unique_ptr<rocksdb::BackupEngineReadOnly>> OpenReadOnly(
    const std::string& dir) {
  CAIRN_RETURN_IF_ERROR(MustExist(dir));
  rocksdb::BackupEngineReadOnly* engine = nullptr;
  CAIRN_RETURN_IF_ERROR(FromRocks(
      rocksdb::BackupEngineReadOnly::Open(EngineOptions(dir), rocksdb::Env::Default(), &engine),
      absl::StrCat("open backup directory ", dir)));
  return std::unique_ptr<rocksdb::BackupEngineReadOnly>(engine);
}

// The writable engine: adds backups (created if `dir` has none) and purges.
absl::StatusOr<std::unique_ptr<rocksdb::BackupEngine>> OpenWritable(const std::string& dir) {
  rocksdb::BackupEngine* engine = nullptr;
  CAIRN_RETURN_IF_ERROR(
      FromRocks(rocksdb::BackupEngine::Open(EngineOptions(dir), rocksdb::Env::Default(), &engine),
                absl::StrCat("open backup directory ", dir)));
  return std::unique_ptr<rocksdb::BackupEngine>(engine);
}

// The backup `id`, or the newest.
absl::StatusOr<BackupInfo> Pick(rocksdb::BackupEngineReadOnly& engine, std::string_view dir_view,
                                std::optional<uint32_t> id) {
  const std::string dir(dir_view);
  std::vector<rocksdb::BackupInfo> all;
  engine.GetBackupInfo(&all);
  if (all.empty()) return absl::NotFoundError(absl::StrCat("no backups in ", dir));
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (!id || it->backup_id == *id) return InfoOf(*it);
  }
  return absl::NotFoundError(absl::StrCat("no backup ", *id, " in ", dir));
}

void SyncDir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Restores backup `info` into the empty or absent directory `scratch` and
// opens it: its last seq must be the backup's, and every table block must
// read back with its checksum.
absl::Status RestoreAndCheck(rocksdb::BackupEngineReadOnly& engine, const BackupInfo& info,
                             const std::string& scratch) {
  CAIRN_RETURN_IF_ERROR(
      FromRocks(engine.RestoreDBFromBackup(rocksdb::RestoreOptions(), info.id, scratch, scratch),
                absl::StrCat("restore backup ", info.id)));
  StoreImpl store(ScratchOptions(), scratch);
  CAIRN_RETURN_IF_ERROR(store.Init());
  if (store.LastSeq() != info.seq) {
    return absl::DataLossError(absl::StrCat("backup ", info.id, " restored to last seq ",
                                            store.LastSeq(), ", but it was taken at seq ",
                                            info.seq));
  }
  return store.VerifyTableChecksums();
}

}  // namespace

namespace internal {

absl::StatusOr<BackupInfo> StoreImpl::Backup(std::string_view dir) {
  absl::MutexLock l(&backup_mu_);
  const absl::Time start = absl::Now();
  absl::StatusOr<BackupInfo> info = BackupLocked(dir);
  absl::MutexLock s(&stats_mu_);
  if (info.ok()) {
    backup_stats_.count++;
    backup_stats_.last_id = info->id;
    backup_stats_.last_seq = info->seq;
    backup_stats_.last_unix_micros = absl::ToUnixMicros(info->created);
    backup_stats_.last_size_bytes = info->size_bytes;
    backup_stats_.last_copied_bytes = info->copied_bytes;
    backup_stats_.last_duration_micros = absl::ToInt64Microseconds(absl::Now() - start);
    backup_stats_.last_error.clear();
  } else {
    backup_stats_.errors++;
    backup_stats_.last_error = std::string(info.status().message());
  }
  return info;
}

absl::StatusOr<BackupInfo> StoreImpl::BackupLocked(std::string_view dir_view) {
  const std::string dir(dir_view);
  const std::string staging = absl::StrCat(path_, "/", kBackupStaging);
  std::error_code ec;
  // What a backup cut short left (RocksDB builds a checkpoint in <dir>.tmp).
  fs::remove_all(staging, ec);
  fs::remove_all(staging + ".tmp", ec);
  fs::create_directories(std::string(dir), ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("backup directory ", dir, ": ", ec.message()));
  }
  {
    rocksdb::Checkpoint* raw = nullptr;
    CAIRN_RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(db_.get(), &raw), "checkpoint"));
    std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
    CAIRN_RETURN_IF_ERROR(
        FromRocks(checkpoint->CreateCheckpoint(staging, std::numeric_limits<uint64_t>::max()),
                  absl::StrCat("checkpoint into ", staging)));
  }
  struct RemoveStaging {
    std::string path;
    ~RemoveStaging() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } remove_staging{staging};
  CrashPoint("backup.after_checkpoint");

  StoreImpl staged(ScratchOptions(), staging);
  CAIRN_RETURN_IF_ERROR(staged.Init());
  CAIRN_ASSIGN_OR_RETURN(auto engine, OpenWritable(dir));
  std::vector<rocksdb::BackupInfo> before;
  engine->GetBackupInfo(&before, /*include_file_details=*/true);
  std::set<std::string> had;
  for (const auto& b : before) {
    for (const auto& f : b.file_details) had.insert(f.relative_filename);
  }
  rocksdb::CreateBackupOptions create;
  create.flush_before_backup = true;
  rocksdb::BackupID id = 0;
  CAIRN_RETURN_IF_ERROR(FromRocks(engine->CreateNewBackupWithMetadata(
                                      create, staged.db_.get(), Metadata(staged.LastSeq()), &id),
                                  absl::StrCat("back up into ", dir)));
  rocksdb::BackupInfo made;
  CAIRN_RETURN_IF_ERROR(FromRocks(engine->GetBackupInfo(id, &made, true), "read the new backup"));
  CAIRN_ASSIGN_OR_RETURN(BackupInfo info, InfoOf(made));
  for (const auto& f : made.file_details) {
    if (!had.count(f.relative_filename)) info.copied_bytes += f.size;
  }
  return info;
}

absl::Status StoreImpl::VerifyTableChecksums() {
  return FromRocks(db_->VerifyChecksum(), absl::StrCat("verify the tables of ", path_));
}

}  // namespace internal

namespace backup {

absl::StatusOr<std::vector<BackupInfo>> List(std::string_view dir_view) {
  const std::string dir(dir_view);
  CAIRN_ASSIGN_OR_RETURN(auto engine, OpenReadOnly(dir));
  std::vector<rocksdb::BackupInfo> all;
  engine->GetBackupInfo(&all);
  if (all.empty()) return absl::NotFoundError(absl::StrCat("no backups in ", dir));
  std::vector<BackupInfo> out;
  for (const auto& b : all) {
    CAIRN_ASSIGN_OR_RETURN(BackupInfo info, InfoOf(b));
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<BackupInfo> Verify(std::string_view dir_view, std::optional<uint32_t> id) {
  const std::string dir(dir_view);
  CAIRN_ASSIGN_OR_RETURN(auto engine, OpenReadOnly(dir));
  CAIRN_ASSIGN_OR_RETURN(BackupInfo info, Pick(*engine, dir, id));
  rocksdb::IOStatus s = engine->VerifyBackup(info.id, /*verify_with_checksum=*/true);
  if (!s.ok()) {
    // Its message names the file ("File corrupted: Checksum mismatch for <path>: ...").
    return absl::DataLossError(absl::StrCat("backup ", info.id, ": ", s.ToString()));
  }
  const std::string scratch = absl::StrCat(dir, "/verify.tmp");
  std::error_code ec;
  fs::remove_all(scratch, ec);
  absl::Status checked = RestoreAndCheck(*engine, info, scratch);
  fs::remove_all(scratch, ec);
  if (!checked.ok()) {
    return absl::DataLossError(absl::StrCat("backup ", info.id, ": ", checked.message()));
  }
  return info;
}

absl::StatusOr<std::vector<uint32_t>> Prune(std::string_view dir_view, uint32_t keep) {
  const std::string dir(dir_view);
  if (keep < 1) return absl::InvalidArgumentError("keep: must be at least 1");
  CAIRN_RETURN_IF_ERROR(MustExist(dir));
  // Not a writable engine on an empty directory: it would lay one out.
  if (fs::is_empty(dir)) return absl::NotFoundError(absl::StrCat("no backups in ", dir));
  CAIRN_ASSIGN_OR_RETURN(auto engine, OpenWritable(dir));
  std::vector<rocksdb::BackupInfo> all;  // oldest first
  engine->GetBackupInfo(&all);
  if (all.empty()) return absl::NotFoundError(absl::StrCat("no backups in ", dir));
  CAIRN_RETURN_IF_ERROR(
      FromRocks(engine->PurgeOldBackups(keep), absl::StrCat("prune backups in ", dir)));
  std::vector<uint32_t> deleted;
  for (size_t i = 0; i + keep < all.size(); ++i) deleted.push_back(all[i].backup_id);
  return deleted;
}

absl::StatusOr<BackupInfo> Restore(std::string_view dir_view, std::string_view target_view,
                                   std::optional<uint32_t> id) {
  const std::string dir(dir_view);
  const std::string target = internal::DirPath(target_view);
  std::error_code ec;
  if (fs::exists(target, ec) && !(fs::is_directory(target, ec) && fs::is_empty(target, ec))) {
    return absl::FailedPreconditionError(absl::StrCat(
        "restore target ", target, " is not empty: restore into a new data directory"));
  }
  CAIRN_ASSIGN_OR_RETURN(auto engine, OpenReadOnly(dir));
  CAIRN_ASSIGN_OR_RETURN(BackupInfo info, Pick(*engine, dir, id));
  // Checksums first, so a damaged backup is refused before anything is
  // written (the restore checks them again as it copies).
  rocksdb::IOStatus verified = engine->VerifyBackup(info.id, /*verify_with_checksum=*/true);
  if (!verified.ok()) {
    return absl::DataLossError(
        absl::StrCat("backup ", info.id, " is damaged, nothing restored: ", verified.ToString()));
  }
  const std::string restoring = absl::StrCat(target, internal::kRestoringSuffix);
  fs::remove_all(restoring, ec);  // a restore cut short before
  fs::create_directories(fs::path(restoring).parent_path(), ec);
  CAIRN_RETURN_IF_ERROR(RestoreAndCheck(*engine, info, restoring));
  internal::CrashPoint("restore.before_rename");
  SyncDir(restoring);
  fs::rename(restoring, target, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("restore: rename ", restoring, " to ", target, ": ", ec.message()));
  }
  SyncDir(fs::absolute(target).parent_path().string());
  return info;
}

}  // namespace backup
}  // namespace cairn
