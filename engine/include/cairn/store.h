// cairn::Store — the embedded event-sourced state store.
//
// Thread safety: a Store is safe for concurrent use by any number of threads.
// Ingest calls from many threads are merged by a group-commit queue (one
// thread at a time folds events, so every batch sees the effects of the
// batches committed before it); reads never block ingest and see a consistent
// RocksDB snapshot. Cursors and Subscriptions are used by one thread at a
// time, may outlive nothing: destroy them before the Store.
#ifndef CAIRN_STORE_H_
#define CAIRN_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "cairn/backup.h"
#include "cairn/event.h"
#include "cairn/options.h"
#include "cairn/source.h"
#include "cairn/stats.h"

namespace cairn {

// Streams entities of a snapshot in (collection, key) order.
class SnapshotCursor {
 public:
  virtual ~SnapshotCursor() = default;
  // Advances to the next entity. Returns false at the end.
  virtual absl::StatusOr<bool> Next() = 0;
  // REQUIRES: the last Next() returned true.
  virtual const Entity& entity() const = 0;
  // The seq this snapshot is consistent with (as_of_seq, or the store's last
  // committed seq when the cursor was created).
  virtual uint64_t seq() const = 0;
};

// A pull subscription. Memory is bounded whatever the consumer's speed: it
// reads the stored change feed from its own cursor and is only woken by
// commits, so a slow subscriber costs nothing and never loses a change.
class Subscription {
 public:
  virtual ~Subscription() = default;
  // Waits up to `timeout` for the next item. Returns false on timeout (the
  // caller may simply call again), CANCELLED after Cancel(), OUT_OF_RANGE when
  // retention removed changes the subscription has not read yet.
  virtual absl::StatusOr<bool> Next(absl::Duration timeout, SubscriptionItem* item) = 0;
  // Wakes a blocked Next(); later calls return CANCELLED. Thread-safe.
  virtual void Cancel() = 0;
  // Seq of the last change delivered (or skipped by the filter).
  virtual uint64_t position() const = 0;
};

// A push subscription: a thread of its own pulls from a Subscription and
// calls `on_item` for every item, in order, so a slow callback only delays
// itself (the pull side is bounded, see Subscription). Destroying the handle
// cancels the subscription and joins the thread; it must be destroyed before
// the Store.
class CallbackSubscription {
 public:
  virtual ~CallbackSubscription() = default;
  // Seq of the last change delivered (or skipped by the filter).
  virtual uint64_t position() const = 0;
};

class Store {
 public:
  // Opens (creating if allowed) the store in directory `path`.
  static absl::StatusOr<std::unique_ptr<Store>> Open(std::string_view path, const Options& options);
  // Closes cleanly: stops background work, flushes nothing that is not
  // already durable-safe (the WAL holds every acknowledged batch).
  virtual ~Store() = default;

  // Ingests one batch atomically: validates every event first (any invalid
  // event rejects the whole batch with INVALID_ARGUMENT naming its index and
  // field, and nothing is applied), then appends, folds and commits the batch
  // in one RocksDB write. Events older than the retention window are
  // rejected with OUT_OF_RANGE.
  virtual absl::StatusOr<IngestResult> Ingest(std::vector<Event> events,
                                              const IngestOptions& options) = 0;

  // Several batches, each exactly as if given to Ingest one after another
  // (validated and applied atomically on its own, in this order, with its
  // own result or error), but sharing commits: usually one RocksDB write for
  // all of them. For callers that receive batches faster than they commit
  // them one by one, such as a pipelined gRPC ingest stream.
  struct Batch {
    std::vector<Event> events;
    IngestOptions options;
  };
  virtual std::vector<absl::StatusOr<IngestResult>> IngestBatches(std::vector<Batch> batches) = 0;

  // IngestBatches in two steps, for callers that validate batches on other
  // threads than the one that commits them (cairnd: its gRPC threads decode
  // and prepare, its ingest worker commits): Prepare validates and
  // canonicalizes a batch exactly as Ingest does, with the same errors, and
  // writes nothing; IngestPrepared then commits prepared batches as
  // IngestBatches commits valid ones (each atomic, in the order given,
  // sharing commits). A prepared batch is used once.
  class PreparedBatch {
   public:
    virtual ~PreparedBatch() = default;
  };
  virtual absl::StatusOr<std::unique_ptr<PreparedBatch>> Prepare(Batch batch) = 0;
  virtual std::vector<absl::StatusOr<IngestResult>> IngestPrepared(
      std::vector<std::unique_ptr<PreparedBatch>> batches) = 0;

  // Side records (cairn/options.h SideRecord): small named values kept in the
  // store's metadata for the layers above the engine, written alone here or
  // atomically with a batch (IngestOptions::side_records). They come with
  // backups; nothing else reads them. PutSideRecord writes synced;
  // GetSideRecord is NOT_FOUND for a name never put (or deleted);
  // ListSideRecords returns those whose name starts with `prefix`, in name
  // order (at most 100,000: RESOURCE_EXHAUSTED beyond); DeleteSideRecords
  // deletes those, and returns how many there were.
  virtual absl::Status PutSideRecord(std::string_view name, std::string_view value) = 0;
  virtual absl::StatusOr<std::string> GetSideRecord(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<SideRecord>> ListSideRecords(std::string_view prefix) = 0;
  virtual absl::StatusOr<size_t> DeleteSideRecords(std::string_view prefix) = 0;

  // Current state. NOT_FOUND when the entity never existed or is deleted.
  virtual absl::StatusOr<Entity> Get(std::string_view collection, std::string_view key) = 0;

  virtual absl::StatusOr<std::unique_ptr<SnapshotCursor>> NewSnapshot(
      const SnapshotOptions& options) = 0;
  // Convenience: calls `fn` per entity until it returns false.
  absl::Status Snapshot(const SnapshotOptions& options,
                        const std::function<bool(const Entity&)>& fn);

  // The entity's versions in the range (none for an entity the store never
  // had). INVALID_ARGUMENT for an inverted range.
  virtual absl::StatusOr<std::vector<Version>> History(std::string_view collection,
                                                       std::string_view key,
                                                       const HistoryOptions& options) = 0;

  virtual absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      const SubscribeOptions& options) = 0;
  // Push form of Subscribe. `on_item` runs on the subscription's thread until
  // it returns false or the handle is destroyed; then, or when the
  // subscription fails (e.g. OUT_OF_RANGE after retention removed changes it
  // had not read), `on_end` (optional) is called once on that thread with OK
  // or the error. Errors in the options are returned here, as by Subscribe.
  absl::StatusOr<std::unique_ptr<CallbackSubscription>> Subscribe(
      const SubscribeOptions& options, std::function<bool(const SubscriptionItem&)> on_item,
      std::function<void(const absl::Status&)> on_end = nullptr);

  // --- Source registry (persisted). PutSource registers or replaces.
  virtual absl::Status PutSource(const SourceDefinition& source) = 0;
  // NOT_FOUND when no source has that name.
  virtual absl::StatusOr<SourceDefinition> GetSource(std::string_view name) = 0;
  virtual absl::StatusOr<std::vector<SourceDefinition>> ListSources() = 0;
  virtual absl::Status RemoveSource(std::string_view name) = 0;

  // --- Contribution sessions (DESIGN §6). Sessions are persisted: an open
  // accrue/replace session survives a restart and can still be committed.
  // Staged records live on disk, not in memory. Positions of session records
  // are assigned at commit: (commit time in µs, index), never older than the
  // source's previous session position.
  virtual absl::StatusOr<std::string> OpenSession(std::string_view source,
                                                  std::string_view collection,
                                                  SessionMode mode) = 0;
  // Returns the canonical key of each record, in order. Any invalid record
  // rejects the call with INVALID_ARGUMENT listing every bad record by index;
  // nothing of it is staged or applied. NOT_FOUND for unknown session ids,
  // FAILED_PRECONDITION for closed ones.
  virtual absl::StatusOr<std::vector<std::string>> SessionUpsert(
      std::string_view session_id, std::vector<SessionRecord> records) = 0;
  virtual absl::StatusOr<std::vector<std::string>> SessionDelete(std::string_view session_id,
                                                                 std::vector<std::string> keys) = 0;
  // Stages events in an atomic session (SessionMode::kAtomic; `collection`
  // at open may be empty, events name theirs). Each event is validated as by
  // Ingest (INVALID_ARGUMENT naming "event i" of this call; nothing of the
  // call is staged then); events may name any source (cairnd checks the
  // caller's write grant on each, as for Ingest). Staged
  // events are on disk, in as many calls as needed; nothing is visible until
  // CloseSession(commit=true) applies them all as one batch: exactly as if
  // they had been given to one Ingest call (same duplicates, conflicts, late
  // and truncate rules, the same end state and history), except for its
  // change feed: each entity's events are folded in position order and the
  // changes numbered entity by entity in key order; and the result carries
  // counts, not per-event outcomes. Memory at commit is bounded by the spill size
  // (kSpillBatchBytes) plus the events of the entity being folded. Returns
  // the number of events the session holds. FAILED_PRECONDITION for a
  // session of another mode or a closed one.
  virtual absl::StatusOr<uint64_t> SessionIngest(std::string_view session_id,
                                                 std::vector<Event> events) = 0;
  // commit=true applies an accrue/replace/atomic session atomically (a snapshot or
  // subscriber never sees half of it); commit=false discards what is staged.
  // For stream sessions, close ends the session and reports what its posts
  // applied as they came (seq range and count).
  virtual absl::StatusOr<IngestResult> CloseSession(std::string_view session_id, bool commit) = 0;
  virtual absl::StatusOr<SessionInfo> GetSession(std::string_view session_id) = 0;

  // --- Named subscription checkpoints (persisted): the seq a consumer has
  // fully processed. Subscribe with Start::kFromSeq at GetCheckpoint() to
  // resume exactly after it. NOT_FOUND for unknown names. Names are checked
  // like every name (ValidateName in cairn/event.h).
  //
  // A checkpoint belongs to the read scope it was created for (DESIGN §4):
  // the collections in `collections` (empty: every collection). Moving it
  // keeps that scope. cairnd checks the caller's read grant against it.
  struct CheckpointInfo {
    uint64_t seq = 0;
    std::vector<std::string> collections;  // empty: every collection
  };
  // Creates `name` for `collections` at `seq`, or moves an existing one to
  // `seq` after `may_move` (when given) accepts its info; the check and the
  // write are one step, so two writers cannot race past it. INVALID_ARGUMENT
  // for a seq beyond the last commit or a bad name.
  virtual absl::Status PutCheckpoint(
      std::string_view name, uint64_t seq, const std::vector<std::string>& collections,
      const std::function<absl::Status(const CheckpointInfo&)>& may_move) = 0;
  absl::Status PutCheckpoint(std::string_view name, uint64_t seq) {
    return PutCheckpoint(name, seq, {}, nullptr);
  }
  virtual absl::StatusOr<CheckpointInfo> GetCheckpointInfo(std::string_view name) = 0;
  absl::StatusOr<uint64_t> GetCheckpoint(std::string_view name) {
    auto info = GetCheckpointInfo(name);
    if (!info.ok()) return info.status();
    return info->seq;
  }
  virtual absl::StatusOr<std::map<std::string, CheckpointInfo>> ListCheckpointInfos() = 0;
  absl::StatusOr<std::map<std::string, uint64_t>> ListCheckpoints() {
    auto all = ListCheckpointInfos();
    if (!all.ok()) return all.status();
    std::map<std::string, uint64_t> out;
    for (const auto& [name, info] : *all) out[name] = info.seq;
    return out;
  }
  // NOT_FOUND when there is none.
  virtual absl::Status DeleteCheckpoint(std::string_view name) = 0;

  // Replaces the retention window at runtime (persisted; takes effect at the
  // next horizon update or CompactNow()).
  virtual absl::Status SetRetention(const RetentionOptions& retention) = 0;
  virtual RetentionOptions Retention() = 0;

  // Counts a batch rejected before it reached Ingest (e.g. a payload its
  // decoder refused) against the source's `rejected_batches`.
  virtual void CountRejectedBatch(std::string_view source) = 0;

  // Seq of the last committed change.
  virtual uint64_t LastSeq() const = 0;
  // Waits up to `timeout` for a commit beyond `after_seq`; true if there is
  // one. Lets one thread drive many subscriptions with Next(ZeroDuration()).
  virtual bool AwaitCommit(uint64_t after_seq, absl::Duration timeout) = 0;
  virtual StoreStats Stats() = 0;

  // Recomputes the retention horizon and compacts every column family now,
  // so expired entries are removed before it returns.
  virtual absl::Status CompactNow() = 0;

  // Adds a backup of the store to directory `dir` (created if missing;
  // cairn/backup.h), consistent as of one commit seq, while ingest and
  // reads go on. One at a time; a second caller waits.
  virtual absl::StatusOr<BackupInfo> Backup(std::string_view dir) = 0;
};

}  // namespace cairn

#endif  // CAIRN_STORE_H_
