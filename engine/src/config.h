// Engine layout and tuning: the column families, the meta keys of the
// default family, and the constants the engine is tuned with. Every key the
// engine writes is built by key_codec.h from these (see README "On-disk
// layout").
#ifndef CAIRN_ENGINE_CONFIG_H_
#define CAIRN_ENGINE_CONFIG_H_

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

namespace cairn::internal {

// ---------------------------------------------------------------------------
// Column-family registry: every family, its purpose, and its index.
enum Cf : size_t {
  kMeta = 0,   // RocksDB's default family: counters, horizon, registry, sessions
  kLog,        // the log of truncates (and of every event, before format 3)
  kState,      // current state per entity
  kHistory,    // versions per entity, newest position first
  kEntitySeq,  // state per entity per change (transaction time), newest first
  kChanges,    // the change feed by seq
  kStaging,    // records of open accrue/replace sessions
  kNumCfs
};
inline constexpr const char* kCfNames[kNumCfs] = {
    "default", "log", "state", "history.desc", "entity_seq.desc", "changes", "staging"};
// The families of formats 1-4 that held history and entity_seq oldest
// first. Opening such a store rewrites them into kHistory and kEntitySeq
// (MigrateNewestFirst, store_open.cc), then drops them.
inline constexpr const char* kLegacyHistory = "history";
inline constexpr const char* kLegacyEntitySeq = "entity_seq";
// Meta keys of that rewrite while it runs: per legacy family, the last key
// it copied (so a killed upgrade resumes after it).
inline constexpr std::string_view kMetaUpgradePrefix = "upgrade/newest_first/";
// Records the rewrite copies in one write (with its progress key).
inline constexpr size_t kUpgradeChunkRecords = 64;

inline std::string CfName(size_t cf) { return kCfNames[cf]; }

// Meta keys (default column family).
inline constexpr std::string_view kMetaLastSeq = "last_seq";
inline constexpr std::string_view kMetaHorizon = "horizon";
inline constexpr std::string_view kMetaSourcePrefix = "source/";
inline constexpr std::string_view kMetaTruncatePrefix = "truncate/";
inline constexpr std::string_view kMetaRegistryPrefix = "registry/";
inline constexpr std::string_view kMetaSessionPrefix = "session/";
inline constexpr std::string_view kMetaCheckpointPrefix = "checkpoint/";
inline constexpr std::string_view kMetaRetention = "retention";
inline constexpr std::string_view kMetaFormatVersion = "format_version";
// Side records (Store::PutSideRecord): "side/" then the name's bytes.
inline constexpr std::string_view kMetaSidePrefix = "side/";
inline constexpr size_t kMaxSideRecordName = 1024;
inline constexpr size_t kMaxSideRecordValue = 1 << 20;
inline constexpr size_t kMaxSideRecordsPerBatch = 64;
inline constexpr size_t kMaxSideRecordsListed = 100000;
// The cairn versions (text, cairn::kVersion) that created the store and that
// opened it last (CheckFormatVersion).
inline constexpr std::string_view kMetaCreatedBy = "created_by";
inline constexpr std::string_view kMetaOpenedBy = "opened_by";

// The on-disk format (README "On-disk layout"): the records and keys of every
// family. A store records the version that wrote it (kMetaFormatVersion, a
// u64); one written before stores recorded it is version 1. Version 2 writes
// retention links as merge operands (retention.h) and no longer the state
// fields that rebuilt linked records. Version 3 logs an event in the history
// version it produced instead of a log record (only truncates keep one).
// Version 4 may keep a change's before-image as a delta against its
// after-image (fbs/change.fbs before_delta). Version 5 keys history and
// entity_seq newest first (key_codec.h) in new families, and writes
// retention links only into tombstones.
// Each reads every record of the versions before it as it is. Opening an
// older store upgrades it in place: the oldest-first families are rewritten
// in chunks that record their progress (a killed upgrade resumes), then the
// current version is recorded (one synced write), then the old families are
// dropped. Any other version is FAILED_PRECONDITION naming both
// (CheckFormatVersion, store_open.cc).
inline constexpr uint64_t kFormatVersion = 5;
inline constexpr uint64_t kOldestReadableFormat = 1;

// Backups (backup.cc): the checkpoint a backup is taken from, inside the
// data directory; and the directory a restore fills before it is renamed to
// its target (<target>.restoring).
inline constexpr char kBackupStaging[] = "backup.tmp";
inline constexpr char kRestoringSuffix[] = ".restoring";
// A directory's path without trailing slashes ("x/" -> "x"), so that
// <dir>.restoring is beside it, not inside it.
inline std::string DirPath(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return std::string(path);
}

inline constexpr const char* kFormats[] = {"debezium",   "goldengate", "infosphere", "sse-feed",
                                           "datapoints", "bitbroker",  "canonical"};

// --- Tuning. Each constant's effect is described where it is used.

// Write path (store_write.cc): what one group commit folds at most, so a
// group's WriteBatchWithIndex (about five times its input: the records each
// event writes) stays bounded however many writers queue. An event weighs
// its document, raw input, key and event id plus kEventWeight bytes.
inline constexpr size_t kMaxGroupWeight = 4 << 20;
inline constexpr size_t kEventWeight = 256;
// Exclusive (spilled) session commits: the in-memory batch is moved into SST
// files once it holds this much (sessions.cc, between entities), and a spill
// file is rolled at kSpillFileBytes (an SstFileWriter keeps its file's index
// and filter in memory until Finish).
inline constexpr size_t kSpillBatchBytes = 8 << 20;
inline constexpr uint64_t kSpillFileBytes = 64u << 20;

// Recent-changes ring (store_impl.h): the decoded changes kept for
// subscriptions near the head, bounded in count and bytes.
inline constexpr size_t kRecentChanges = 16384;
inline constexpr size_t kRecentBytes = 32 << 20;
// Under a memory budget (Options::memory_budget): the ring takes at most an
// eighth of it, memtables at most half (charged to the block cache, which
// gets the rest). A family holds at most kWriteBuffers memtables (the active
// one and one being flushed; writes stop at that, as RocksDB's
// max_write_buffer_number), so the sizes below keep the sum within the half
// even while a slow disk holds every flush back: a cold family's (default,
// log, staging) a 64th of the budget (4 MiB at most), a hot family's an equal
// share of what is left.
inline size_t RecentBytes(size_t budget) {
  return budget == 0 ? kRecentBytes : std::min(kRecentBytes, budget / 8);
}
// The leader's cache of recently written state records (state_cache.h) takes
// an eighth of that share, the ring the rest.
inline size_t StateCacheBytes(size_t budget) { return RecentBytes(budget) / 8; }
inline size_t RingBytes(size_t budget) { return RecentBytes(budget) - StateCacheBytes(budget); }
inline constexpr int kWriteBuffers = 2;
inline constexpr size_t kColdWriteBuffer = 4 << 20;
inline size_t ColdWriteBuffer(size_t budget) { return std::min(kColdWriteBuffer, budget / 64); }
// The families written now and then (the log: truncates only, format 3);
// every event writes the others.
inline constexpr bool IsColdCf(size_t cf) { return cf == kMeta || cf == kLog || cf == kStaging; }
inline constexpr size_t kNumColdCfs = [] {
  size_t n = 0;
  for (size_t cf = 0; cf < kNumCfs; ++cf) n += IsColdCf(cf);
  return n;
}();
inline size_t HotWriteBuffer(size_t budget) {
  size_t cold = kWriteBuffers * kNumColdCfs * ColdWriteBuffer(budget);
  return (budget / 2 - cold) / (kWriteBuffers * (kNumCfs - kNumColdCfs));
}
// Changes a subscription reads from the change feed per step.
inline constexpr size_t kSubscriptionChunk = 256;

// Read-ahead of a snapshot's per-entity version seeks (see snapshot_cursor.cc).
inline constexpr size_t kSnapshotReadahead = 2 << 20;

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_CONFIG_H_
