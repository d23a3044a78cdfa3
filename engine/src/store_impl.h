// StoreImpl: cairn::Store on RocksDB. This header declares the whole
// implementation; its member functions are defined one file per
// responsibility:
//
//   store_open.cc       open, recovery of the counters, close; Store::Open
//   store_write.cc      validation, group commit (on the writer queue of
//                       write_queue.h), the exclusive (spilled) commit,
//                       events and truncates
//   materializer.cc     ApplyToEntity: one event folded into one entity, in
//                       named steps (FoldInOrder, RefoldLate, EmitChange,
//                       WriteEntity)
//   store_read.cc       Get, snapshots, History, the change feed, Subscribe,
//                       Stats
//   retention.cc        the horizon, the compaction filters, CompactNow
//   source_registry.cc  PutSource / GetSource / ListSources / RemoveSource
//   sessions.cc         contribution sessions (stream, accrue, replace)
//   checkpoints.cc      named subscription checkpoints
//
// with snapshot_cursor.cc and subscription.cc for the read-side objects,
// recent_changes.cc for the ring of recent changes subscriptions read, and
// state_cache.h for the leader's cache of the state records it wrote.
//
// Write path. Ingest() validates and canonicalizes a batch on the caller's
// thread, then joins a LevelDB-style writer queue. The writer at the front
// (the leader) takes every queued batch, folds them one after another into a
// single WriteBatchWithIndex (so each batch reads the effects of the ones
// before it), and commits the group in one RocksDB write, fsynced when any
// batch in it asked for durability: concurrent durable writers share fsyncs.
// A batch that fails while being folded is rolled back to its save point
// without disturbing the rest of the group. Only the leader touches the
// materializer's in-memory state (next seq, counters, truncate markers).
//
// Materialization of an event on an entity (see README "Materialization"):
//  * in order (its position is after the entity's newest version): one new
//    history version and the new state; the predecessor is not touched
//    (history is keyed newest first, so retention finds a version's
//    successor without a link), unless it is a tombstone, which gets a link
//    merged into it: one point read per event (the state);
//  * late: the version is inserted in position order and the later versions
//    are re-folded until the first upsert or delete (whose after-image does
//    not depend on what came before), so the cost is bounded by the entity's
//    versions after that position, not by the store.
// When the state (document, existence, completeness) changes, the commit gets
// the next seq, a change record, and an entity_seq entry (keyed newest first
// too; a previous entry of a deleted entity gets a link to it).
//
// Reads take a RocksDB snapshot; the published last seq is updated only after
#ifndef CAIRN_ENGINE_STORE_IMPL_H_
#define CAIRN_ENGINE_STORE_IMPL_H_

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cairn/store.h"
#include "config.h"
#include "latency.h"
#include "recent_changes.h"
#include "records.h"
#include "retention.h"
#include "rocksdb/cache.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/db.h"
#include "rocksdb/listener.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/statistics.h"
#include "rocksdb/utilities/write_batch_with_index.h"
#include "rocksdb/write_buffer_manager.h"
#include "state_cache.h"
#include "write_queue.h"

namespace cairn::internal {

// A version's place in an entity's order: position, then source name.
struct VersionPos {
  Position position;
  std::string source;
  auto operator<=>(const VersionPos&) const = default;
};

// An event after validation: canonical key and payload, encoded keys.
struct Prepared {
  Event event;
  std::string key_bytes;
  std::string entity;  // collection | key
};

// A batch validated by Store::Prepare, waiting for IngestPrepared.
struct PreparedBatchImpl : Store::PreparedBatch {
  std::vector<Prepared> events;
  IngestOptions options;
};

struct Marker {
  VersionPos at;
  auto operator<=>(const Marker&) const = default;
};

// A source's counters as kept in the meta family (store_open.cc).
std::string EncodeSourceStats(const SourceStats& s);
SourceStats DecodeSourceStats(std::string_view in);

// RocksDB's background errors: a full disk (ENOSPC while appending to the
// WAL, flushing or compacting) stops RocksDB's writes or its background work
// until the error is cleared. Left alone, RocksDB retries every 5 s and
// refuses a DB::Resume meanwhile; cairn turns that off and resumes itself,
// at the next write that fails (StoreImpl::WriteResuming) and from the
// retention thread every second while an error is pending, so ingest works
// again as soon as space is freed.
class BackgroundErrors : public rocksdb::EventListener {
 public:
  explicit BackgroundErrors(std::function<void()> on_error) : on_error_(std::move(on_error)) {}
  // Called by RocksDB (db mutex released) when it would start its own
  // recovery.
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    bg_error.PermitUncheckedError();
    *auto_recovery = false;
    pending_.store(true, std::memory_order_release);
    on_error_();
  }
  bool pending() const { return pending_.load(std::memory_order_acquire); }
  void Resumed() { pending_.store(false, std::memory_order_release); }

 private:
  std::function<void()> on_error_;
  std::atomic<bool> pending_{false};
};

class StoreImpl : public Store {
 public:
  StoreImpl(const Options& options, std::string path)
      : options_(options),
        path_(std::move(path)),
        state_cache_(StateCacheBytes(options.memory_budget)),
        recent_(kRecentChanges, RingBytes(options.memory_budget)) {
    if (!options_.now_micros) {
      options_.now_micros = [] { return static_cast<uint64_t>(absl::ToUnixMicros(absl::Now())); };
    }
  }
  ~StoreImpl() override;

  absl::Status Init();

  absl::StatusOr<IngestResult> Ingest(std::vector<Event> events,
                                      const IngestOptions& options) override;
  std::vector<absl::StatusOr<IngestResult>> IngestBatches(std::vector<Batch> batches) override;
  absl::StatusOr<std::unique_ptr<PreparedBatch>> Prepare(Batch batch) override;
  std::vector<absl::StatusOr<IngestResult>> IngestPrepared(
      std::vector<std::unique_ptr<PreparedBatch>> batches) override;
  absl::StatusOr<Entity> Get(std::string_view collection, std::string_view key) override;
  absl::StatusOr<std::unique_ptr<SnapshotCursor>> NewSnapshot(
      const SnapshotOptions& options) override;
  absl::StatusOr<std::vector<Version>> History(std::string_view collection, std::string_view key,
                                               const HistoryOptions& options) override;
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(const SubscribeOptions& options) override;
  uint64_t LastSeq() const override { return last_seq_.load(std::memory_order_acquire); }
  bool AwaitCommit(uint64_t after_seq, absl::Duration timeout) override {
    std::atomic<bool> never{false};
    WaitForCommit(after_seq, absl::Now() + timeout, &never);
    return LastSeq() > after_seq;
  }
  StoreStats Stats() override;
  absl::Status CompactNow() override;
  absl::StatusOr<BackupInfo> Backup(std::string_view dir) override;
  // Reads every block of every table file and checks its checksum
  // (backup.cc: a restored backup is checked this way).
  absl::Status VerifyTableChecksums();

  absl::Status PutSource(const SourceDefinition& source) override;
  absl::StatusOr<SourceDefinition> GetSource(std::string_view name) override;
  absl::StatusOr<std::vector<SourceDefinition>> ListSources() override;
  absl::Status RemoveSource(std::string_view name) override;
  absl::StatusOr<std::string> OpenSession(std::string_view source, std::string_view collection,
                                          SessionMode mode) override;
  absl::StatusOr<std::vector<std::string>> SessionUpsert(
      std::string_view session_id, std::vector<SessionRecord> records) override;
  absl::StatusOr<std::vector<std::string>> SessionDelete(std::string_view session_id,
                                                         std::vector<std::string> keys) override;
  absl::StatusOr<uint64_t> SessionIngest(std::string_view session_id,
                                         std::vector<Event> events) override;
  absl::StatusOr<IngestResult> CloseSession(std::string_view session_id, bool commit) override;
  absl::StatusOr<SessionInfo> GetSession(std::string_view session_id) override;
  absl::Status PutCheckpoint(
      std::string_view name, uint64_t seq, const std::vector<std::string>& collections,
      const std::function<absl::Status(const CheckpointInfo&)>& may_move) override;
  absl::StatusOr<CheckpointInfo> GetCheckpointInfo(std::string_view name) override;
  absl::StatusOr<std::map<std::string, CheckpointInfo>> ListCheckpointInfos() override;
  absl::Status DeleteCheckpoint(std::string_view name) override;
  absl::Status PutSideRecord(std::string_view name, std::string_view value) override;
  absl::StatusOr<std::string> GetSideRecord(std::string_view name) override;
  absl::StatusOr<std::vector<SideRecord>> ListSideRecords(std::string_view prefix) override;
  absl::StatusOr<size_t> DeleteSideRecords(std::string_view prefix) override;
  absl::Status SetRetention(const RetentionOptions& retention) override;
  RetentionOptions Retention() override;
  void CountRejectedBatch(std::string_view source) override;

  // For subscriptions.
  void AddSubscriber() { subscriptions_.fetch_add(1, std::memory_order_relaxed); }
  void RemoveSubscriber() { subscriptions_.fetch_sub(1, std::memory_order_relaxed); }
  absl::Status ReadChanges(uint64_t after_seq, size_t max, std::vector<Change>* out,
                           uint64_t* last_read);
  // Waits until LastSeq() > seq, the deadline passes, or *cancelled.
  void WaitForCommit(uint64_t seq, absl::Time deadline, const std::atomic<bool>* cancelled);
  void WakeWaiters() {
    absl::MutexLock l(&notify_mu_);
    notify_cv_.SignalAll();
  }
  Horizon& horizon() { return horizon_; }

 private:
  struct BatchState;
  // One batch (or task) in the writer queue (write_queue.h).
  struct Writer : QueuedWriter {
    std::vector<Prepared>* events = nullptr;
    // Instead of events: work folded by the leader like a batch (session
    // commits), with the same save-point atomicity.
    std::function<absl::Status(BatchState*, IngestResult*)> task;
    // Runs alone and commits through SST ingestion (CommitExclusive).
    bool commit_alone = false;
    bool durable = false;
    // Written with the batch when it applies (IngestOptions::side_records).
    const std::vector<SideRecord>* side_records = nullptr;
    IngestResult result;

    size_t weight_bytes = kEventWeight;  // Weigh(*events) when events are set

    size_t weight() const { return weight_bytes; }
    bool exclusive() const { return commit_alone; }
  };

  // State the leader mutates while folding one batch; merged into the
  // store's state only when the batch succeeds.
  struct BatchState {
    uint64_t next_seq = 0;
    std::map<std::string, SourceStats> sources;
    std::vector<std::pair<std::string, Marker>> markers;  // collection, marker
    std::vector<Change> changes;                          // decoded, for the recent-changes ring
    // An atomic commit: a truncate records its marker and log entry only;
    // the commit's walk applies it to the collection's entities.
    bool truncates_in_walk = false;
  };

  absl::Status Validate(std::vector<Event>& events, std::vector<Prepared>* out);
  // Validate, counting a rejected batch against the sources it names.
  absl::Status Prepare(std::vector<Event>& events, std::vector<Prepared>* out);
  // Queues `w` and returns once its batch is committed or failed.
  absl::StatusOr<IngestResult> Enqueue(Writer& w);
  // Queues the writers together, in order, and returns once each is
  // committed or failed (see Writer::status, Writer::result).
  void EnqueueAll(const std::vector<Writer*>& ws);
  absl::Status ValidateSource(const SourceDefinition& s);
  absl::StatusOr<records::SessionValue> LoadSession(std::string_view id);
  absl::Status PutSession(std::string_view id, const records::SessionValue& v);
  absl::StatusOr<records::SessionValue> OpenSessionFor(std::string_view id);
  // Ingests a stream session's post and adds what it applied to the
  // session's record.
  absl::Status IngestForStreamSession(std::string_view session_id, std::vector<Event> events);
  // The tail of SessionUpsert/SessionDelete once every record is valid: a
  // stream session ingests the records now (positions from
  // NextSessionPosition); accrue/replace sessions stage them (the last write
  // of a key wins) and count them in the session record, in one write.
  // `docs` holds the upserts' documents (moved from), null for deletes.
  absl::Status StreamOrStage(std::string_view session_id, records::SessionValue session, Op op,
                             const std::vector<std::string>& key_bytes,
                             const std::vector<std::string>& key_json,
                             std::vector<std::string>* docs);
  // REQUIRES: the writer-queue leader (a session commit runs as its task).
  absl::Status CommitSession(const std::string& id, const records::SessionValue& session,
                             BatchState* bs, IngestResult* result);
  // REQUIRES: the writer-queue leader. An atomic session's commit: its
  // truncates, then a walk over entities in key order (sessions.cc).
  absl::Status CommitAtomic(const std::string& id, const records::SessionValue& session,
                            BatchState* bs, IngestResult* result);
  absl::Status DropStaging(std::string_view id);
  Position NextSessionPosition(const std::string& source, uint64_t count);

  // --- The commit path. REQUIRES (every function to the end of this
  // list): the calling thread is the writer-queue leader, i.e. inside
  // WriteQueue::Run's commit callback; only it touches batch_ and the
  // leader-only members below.
  absl::Status CommitGroup(std::vector<Writer*>& group);
  absl::Status CommitExclusive(Writer* w);
  // During an exclusive commit: moves what batch_ holds into the SST files
  // (meta entries are kept aside for the final meta file) and clears it.
  absl::Status SpillBatch();
  // Adds one entry to the CF's spill file (rolling to a new one by size, or
  // when the key does not come after the file's last).
  absl::Status SpillPut(size_t cf, rocksdb::Slice key, rocksdb::Slice value);
  // With Spill::sort_log: the log entries parked in the staging family by
  // SpillBatch, in key order, into the log's spill files; DropLogSort
  // removes them (also at open, after a crash).
  absl::Status SpillSortedLog();
  absl::Status DropLogSort();
  absl::Status ApplyBatch(Writer* w, BatchState* bs);
  absl::Status ApplyEvent(Prepared& p, BatchState* bs, IngestResult* result);
  // What the store logged under an event's identity, if anything (a
  // duplicate when it equals the event, else a conflict).
  struct Logged {
    Op op;
    std::string payload;
    bool snapshot;
  };
  absl::StatusOr<std::optional<Logged>> FindLogged(const Prepared& p);
  absl::Status ApplyTruncate(const Prepared& p, BatchState* bs);
  // `logged`: the accepted event the version records (format 3), or null
  // for a truncate version.
  absl::Status ApplyToEntity(std::string_view collection, std::string_view key_bytes,
                             const std::string& entity, const VersionPos& at, Op op,
                             const std::string& payload, bool snapshot, BatchState* bs,
                             bool check_markers, const Event* logged = nullptr);
  // One event being folded into one entity by ApplyToEntity's steps
  // (materializer.cc).
  struct EntityFold {
    std::string_view collection;
    std::string_view key_bytes;
    const std::string& entity;
    VersionPos at;
    Op op;
    const std::string& payload;
    bool snapshot;
    std::optional<records::StateValue> state;  // before; nullopt: new entity
    records::StateValue next;                  // the state it leaves
    records::VersionValue version;             // the event's history version
    std::string version_key;
    // Versions whose records are rewritten (re-folded), with their new values.
    std::vector<std::pair<std::string, records::VersionValue>> rewrites;
    // The version before the event's when it is a tombstone, which gets the
    // event's timestamp as its next_timestamp (a link merge).
    std::optional<std::string> pred_link;
    bool in_order = true;  // after the newest version
    uint64_t oldest_ts = 0;
    uint64_t oldest_seq = 0;  // the retention horizon when it started
  };
  absl::Status FoldInOrder(EntityFold& f);
  absl::Status RefoldLate(EntityFold& f);
  // The seq of the change, or of the previous commit when nothing visible
  // changed (no change is emitted then).
  absl::StatusOr<uint64_t> EmitChange(EntityFold& f, BatchState* bs);
  absl::Status WriteEntity(const EntityFold& f);
  absl::Status EnforceMarkers(std::string_view collection, std::string_view key_bytes,
                              const std::string& entity, const VersionPos& at, BatchState* bs);
  absl::StatusOr<std::optional<std::string>> BatchGet(Cf cf, const std::string& key);
  // Puts into the group's batch. The change feed and entity_seq are never
  // read back while a group is folded, so their entries skip the batch index
  // (a third of its inserts); a session commit indexes everything, since its
  // spill reads the batch through the index.
  absl::Status BatchPut(Cf cf, std::string_view key, std::string_view value);
  // INVALID_ARGUMENT naming the record for side records past their bounds
  // (config.h kMaxSideRecord*), before anything is queued.
  static absl::Status CheckSideRecords(const std::vector<SideRecord>& records);
  // A merge operand (a retention link, retention.h) into the group's batch,
  // indexed as BatchPut decides.
  absl::Status BatchMerge(Cf cf, std::string_view key, std::string_view operand);
  SourceStats& StatsFor(BatchState* bs, const std::string& source);
  // --- End of the commit path.

  // FAILED_PRECONDITION for a store of another format version; records the
  // version in a store that has none (see kFormatVersion).
  absl::Status CheckFormatVersion();
  // Rewrites the format-4 families (legacy_cfs_) newest first into kHistory
  // and kEntitySeq, in chunks of kUpgradeChunkRecords that each record how
  // far they got (kMetaUpgradePrefix), so a killed upgrade resumes.
  // REQUIRES: Init, before anything else reads or writes them.
  absl::Status MigrateNewestFirst();
  // Drops the format-4 families once the version that no longer reads them
  // is recorded (an upgrade killed in between drops them at the next open).
  absl::Status DropLegacyFamilies();
  // db_->Write, and the way back from a full disk: an I/O error (ENOSPC in
  // the WAL or in a flush) stops RocksDB's writes until the background
  // error is cleared, so a failed write asks RocksDB to resume (DB::Resume:
  // it flushes the memtables into a new WAL generation, and fails again
  // while the disk is still full) and, if it did, writes once more.
  // Nothing of a failed write is visible (see README "Durability under
  // faults"). Any thread.
  absl::Status WriteResuming(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* wb,
                             std::string_view what);
  // DB::Resume; true when RocksDB has no background error left. One at a
  // time (resume_mu_): RocksDB answers Busy to a resume while another is in
  // progress, so a writer racing the retention thread's resume would fail
  // although the disk has room again; serialized, it waits for that resume
  // and then finds the error cleared (DB::Resume returns OK at once).
  bool Resume() ABSL_LOCKS_EXCLUDED(resume_mu_);
  absl::Status LoadMeta();
  // REQUIRES: backup_mu_. Checkpoint, staging store, BackupEngine (backup.cc).
  absl::StatusOr<BackupInfo> BackupLocked(std::string_view dir)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(backup_mu_);
  absl::Status CleanClosedSessions();
  absl::Status UpdateHorizon();
  void RetentionLoop();

  // Members, grouped by what protects them.
  //
  // Set by the constructor and Init, read-only after (options_.retention
  // excepted: retention_opts_mu_).
  Options options_;
  std::string path_;
  std::string recovery_;                         // StoreStats::recovery
  std::string created_by_;                       // StoreStats::versions, read at open
  std::string previously_opened_by_;             // (CheckFormatVersion)
  std::shared_ptr<BackgroundErrors> bg_errors_;  // a listener of db_
  std::unique_ptr<rocksdb::DB> db_;
  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffers_;  // null without a budget
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  std::vector<std::unique_ptr<rocksdb::CompactionFilter>> filters_;
  // The format-4 families of a store being upgraded ({history, entity_seq},
  // oldest first), open until DropLegacyFamilies; empty otherwise.
  std::vector<rocksdb::ColumnFamilyHandle*> legacy_cfs_;
  // Atomics inside; written by the retention thread, read by everyone.
  Horizon horizon_;

  // Writer queue (group commit): a group weighs at most kMaxGroupWeight
  // bytes, so its WriteBatchWithIndex stays bounded.
  WriteQueue<Writer> write_queue_{kMaxGroupWeight};

  // Leader-only: touched only by the writer-queue leader (the commit path).
  std::unique_ptr<rocksdb::WriteBatchWithIndex> batch_;
  // State records of recently written entities, and the group's pending
  // ones (state_cache.h). Not used by an exclusive commit, which clears it.
  StateCache state_cache_;
  bool use_state_cache_ = true;
  uint64_t next_seq_ = 1;
  std::map<std::string, SourceStats> sources_;
  std::map<std::string, std::set<Marker>> markers_;
  uint64_t group_commit_micros_ = 0;
  // Set while an exclusive (large session) commit is folding.
  struct Spill {
    std::string dir;
    std::vector<std::unique_ptr<rocksdb::SstFileWriter>> writers;  // per CF
    std::vector<std::vector<std::string>> files;                   // per CF
    std::map<std::string, std::string> meta;
    // Per CF: the last key in the open file. A key that does not come
    // after it starts a new file (files of one CF may then overlap, and
    // IngestExternalFiles puts them in level 0).
    std::vector<std::string> last_key;
    // An atomic commit folds entity by entity, so its log keys (source,
    // position, ...) arrive in no order: each spill parks them in the
    // staging family under keys::LogSortPrefix(), and they are written to
    // the log's files in key order at the end, so the log gets a few large
    // files that do not overlap instead of one small file per spill.
    bool sort_log = false;
  };
  std::unique_ptr<Spill> spill_;

  // Published by the leader after each commit, read by any thread.
  absl::Mutex stats_mu_;  // guards published copies for Stats()
  std::map<std::string, SourceStats> published_sources_ ABSL_GUARDED_BY(stats_mu_);
  StoreStats::Backups backup_stats_ ABSL_GUARDED_BY(stats_mu_);

  std::atomic<uint64_t> last_seq_{0};
  // What the commit path has written since open (StoreStats).
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> records_written_{0};
  std::atomic<uint64_t> bytes_written_{0};
  LatencyRecorder ingest_latency_;
  LatencyRecorder commit_latency_;
  LatencyRecorder commit_sync_latency_;
  std::shared_ptr<rocksdb::Statistics> rocks_stats_;  // block cache hits and misses

  // The most recent committed changes, for subscriptions near the head
  // (ReadChanges). Filled only while some subscription exists (capture_ is
  // decided per group); a gap (a session commit, a group without capture)
  // restarts it.
  RecentChanges recent_;
  std::atomic<int> subscriptions_{0};
  bool capture_ = false;  // this group records its changes (leader only)

  // Each guarded by its own mutex.
  absl::Mutex checkpoint_mu_;  // one checkpoint writer at a time
  absl::Mutex backup_mu_;      // one backup at a time (Backup)
  absl::Mutex resume_mu_;      // one DB::Resume at a time (Resume)
  // Serializes session bookkeeping (record counts, position assignment).
  absl::Mutex sessions_mu_;
  std::map<std::string, Position> session_positions_ ABSL_GUARDED_BY(sessions_mu_);
  absl::Mutex notify_mu_;  // commit waiters (WaitForCommit) sleep on notify_cv_
  absl::CondVar notify_cv_;

  absl::Mutex retention_opts_mu_;  // guards options_.retention after Init
  // The retention thread sleeps on retention_cv_ until stopping_.
  absl::Mutex retention_mu_;
  absl::CondVar retention_cv_;
  bool stopping_ ABSL_GUARDED_BY(retention_mu_) = false;
  std::thread retention_thread_;
};

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_STORE_IMPL_H_
