// cairn::Store on RocksDB.
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
//    history version, the predecessor's `next_timestamp` updated, new state.
//    The state record carries the newest version's fields, so the
//    predecessor is rewritten without being read: one point read per event;
//  * late: the version is inserted in position order and the later versions
//    are re-folded until the first upsert or delete (whose after-image does
//    not depend on what came before), so the cost is bounded by the entity's
//    versions after that position, not by the store.
// When the state (document, existence, completeness) changes, the commit gets
// the next seq, a change record, and an entity_seq entry (the previous entry,
// rebuilt from the state record, is marked superseded so retention knows when
// it stops being needed).
//
// Reads take a RocksDB snapshot; the published last seq is updated only after
// the write returns, so every read sees whole groups.
#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cairn/status.h"
#include "cairn/store.h"
#include "json_doc.h"
#include "key_codec.h"
#include "records.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/write_batch_with_index.h"

namespace cairn {
namespace {

using records::Doc;

// ---------------------------------------------------------------------------
// Column-family registry: every family, its purpose, and its index.
enum Cf : size_t {
  kMeta = 0,   // RocksDB's default family: counters, horizon, registry, sessions
  kLog,        // the event log
  kState,      // current state per entity
  kHistory,    // versions per entity in position order
  kEntitySeq,  // state per entity per change (transaction time)
  kChanges,    // the change feed by seq
  kStaging,    // records of open accrue/replace sessions
  kNumCfs
};
constexpr const char* kCfNames[kNumCfs] = {"default",    "log",     "state",  "history",
                                           "entity_seq", "changes", "staging"};

std::string CfName(size_t cf) { return kCfNames[cf]; }

// Meta keys (default column family).
constexpr std::string_view kMetaLastSeq = "last_seq";
constexpr std::string_view kMetaHorizon = "horizon";
constexpr std::string_view kMetaSourcePrefix = "source/";
constexpr std::string_view kMetaTruncatePrefix = "truncate/";
constexpr std::string_view kMetaRegistryPrefix = "registry/";
constexpr std::string_view kMetaSessionPrefix = "session/";
constexpr std::string_view kMetaCheckpointPrefix = "checkpoint/";
constexpr std::string_view kMetaRetention = "retention";

constexpr const char* kFormats[] = {"debezium",   "goldengate", "infosphere", "sse-feed",
                                    "datapoints", "bitbroker",  "canonical"};

// The one place a rocksdb::Status becomes an absl::Status.
absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(Av(what), ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return absl::UnavailableError(msg);
  if (s.IsIOError() && s.subcode() == rocksdb::Status::kNoSpace) {
    return absl::ResourceExhaustedError(msg);
  }
  return absl::InternalError(msg);
}


// A version's place in an entity's order: position, then source name.
struct VersionPos {
  Position position;
  std::string source;
  auto operator<=>(const VersionPos&) const = default;
};

// Read-ahead of a snapshot's per-entity version seeks (see SnapshotCursorImpl).
constexpr size_t kSnapshotReadahead = 2 << 20;

// Retention horizon shared with the compaction filters.
struct Horizon {
  std::atomic<uint64_t> oldest_seq{0};        // seqs >= this are answerable
  std::atomic<uint64_t> oldest_timestamp{0};  // positions with ts >= this are
};

class RetentionFilter : public rocksdb::CompactionFilter {
 public:
  RetentionFilter(Cf cf, const Horizon* h) : cf_(cf), horizon_(h) {}
  bool Filter(int, const rocksdb::Slice& key, const rocksdb::Slice& value,
              std::string*, bool*) const override {
    std::string_view k(key.data(), key.size());
    std::string_view v(value.data(), value.size());
    uint64_t oldest_seq = horizon_->oldest_seq.load(std::memory_order_relaxed);
    uint64_t oldest_ts = horizon_->oldest_timestamp.load(std::memory_order_relaxed);
    switch (cf_) {
      case kLog: {
        std::string source;
        uint64_t ts;
        return keys::ConsumeEscaped(&k, &source) && keys::ConsumeU64(&k, &ts) &&
               ts < oldest_ts;
      }
      case kChanges: {
        uint64_t seq;
        return keys::ConsumeU64(&k, &seq) && seq < oldest_seq;
      }
      case kHistory: {
        // Keep a version while a point inside the window can still see it:
        // its successor must itself be older than the window.
        auto next = records::PeekVersionNext(v);
        if (!next) return false;
        if (*next != records::kNone) return *next < oldest_ts;
        // The newest version: removable only as an expired tombstone.
        auto ver = records::DecodeVersion(v);
        size_t n = keys::EntityPrefixLength(k);
        uint64_t ts;
        std::string_view rest = k.substr(n);
        return ver.ok() && !ver->after && n > 0 && keys::ConsumeU64(&rest, &ts) &&
               ts < oldest_ts;
      }
      case kEntitySeq: {
        auto superseded = records::PeekEntitySeqSuperseded(v);
        if (!superseded) return false;
        if (*superseded != records::kNone) return *superseded <= oldest_seq;
        auto e = records::DecodeEntitySeq(v);
        std::string_view rest = k.substr(keys::EntityPrefixLength(k));
        uint64_t seq;
        return e.ok() && !e->doc && keys::ConsumeU64(&rest, &seq) && seq < oldest_seq &&
               e->position.timestamp < oldest_ts;
      }
      case kState: {
        // Tombstones leave once the delete is older than the window on both
        // axes; live state is never removed.
        auto s = records::DecodeState(v);
        return s.ok() && !s->doc && s->seq < oldest_seq &&
               s->position.timestamp < oldest_ts;
      }
      default:
        return false;
    }
  }
  const char* Name() const override { return "cairn.RetentionFilter"; }

 private:
  Cf cf_;
  const Horizon* horizon_;
};

std::string EncodeSourceStats(const SourceStats& s) {
  std::string out;
  for (uint64_t v : {s.accepted, s.duplicates, s.conflicts, s.rejected_batches,
                     s.last_position.timestamp, s.last_position.tick}) {
    keys::AppendU64(v, &out);
  }
  return out;
}

SourceStats DecodeSourceStats(std::string_view in) {
  SourceStats s;
  uint64_t* fields[] = {&s.accepted, &s.duplicates, &s.conflicts, &s.rejected_batches,
                        &s.last_position.timestamp, &s.last_position.tick};
  for (uint64_t* f : fields) {
    if (!keys::ConsumeU64(&in, f)) break;
  }
  return s;
}

// An event after validation: canonical key and payload, encoded keys.
struct Prepared {
  Event event;
  std::string key_bytes;
  std::string entity;   // collection | key
  std::string log_key;
};

struct Marker {
  VersionPos at;
  auto operator<=>(const Marker&) const = default;
};

Entity MakeEntity(std::string collection, std::string key_json, const Doc& doc,
                  bool complete, Position pos, std::string source, uint64_t seq) {
  Entity e;
  e.collection = std::move(collection);
  e.key = std::move(key_json);
  e.document = doc ? *doc : std::string();
  e.complete = complete;
  e.position = pos;
  e.source = std::move(source);
  e.seq = seq;
  return e;
}

class StoreImpl;

// ---------------------------------------------------------------------------
// Snapshot cursors.

// Iterates one column family between bounds, with the store's read snapshot.
struct ScanRange {
  std::string lower;
  std::string upper;  // empty: unbounded
};

absl::StatusOr<ScanRange> SnapshotRange(const SnapshotOptions& o) {
  ScanRange r;
  if (o.collection.empty()) {
    if (!o.key_prefix.empty()) {
      return absl::InvalidArgumentError("key_prefix requires a collection");
    }
    return r;
  }
  keys::AppendEscaped(o.collection, &r.lower);
  if (!o.key_prefix.empty()) r.lower += keys::StringKeyPrefix(o.key_prefix);
  r.upper = keys::PrefixSuccessor(r.lower);
  return r;
}

absl::Status SplitEntity(std::string_view entity, std::string* collection,
                         std::string* key_json) {
  std::string_view in = entity;
  if (!keys::ConsumeEscaped(&in, collection)) {
    return absl::DataLossError("malformed entity key");
  }
  CAIRN_ASSIGN_OR_RETURN(*key_json, keys::KeyToJson(in));
  return absl::OkStatus();
}

class SnapshotCursorImpl : public SnapshotCursor {
 public:
  enum class Mode { kCurrent, kAsOfSeq, kAsOfPosition };

  // Entities are enumerated from `state` (one small record per entity, many
  // to a block); a point-in-time mode then does one SeekForPrev per entity
  // in `versions` (entity_seq or history). Enumerating from `versions`
  // itself would cost a second seek per entity, to skip the entity's other
  // versions, which lands on another block once an entity has many: with
  // the state CF the cost per entity stays one versions block whatever the
  // number of versions. Every entity with a version has a state record
  // (retention only drops a tombstone once its delete is older than every
  // answerable point, where the entity does not exist either).
  SnapshotCursorImpl(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* state,
                     rocksdb::ColumnFamilyHandle* versions, const rocksdb::Snapshot* snap,
                     Mode mode, ScanRange range, uint64_t seq, Position pos,
                     bool include_incomplete, bool bulk)
      : db_(db), snap_(snap), mode_(mode), range_(std::move(range)), seq_(seq),
        pos_(pos), include_incomplete_(include_incomplete) {
    rocksdb::ReadOptions ro;
    ro.snapshot = snap_;
    if (mode_ != Mode::kCurrent) {
      // A whole collection (or store): entities come in key order, so each
      // entity's seek lands further along the same files; read them ahead in
      // large chunks rather than one block (one pread) per entity when the
      // cache does not hold them, and keep those blocks, each read once, out
      // of the block cache, where they would evict what ingest and point
      // reads use (and the index blocks every seek needs). A key-prefix
      // snapshot may be a handful of entities: plain reads, cached.
      rocksdb::ReadOptions vro = ro;
      if (bulk) {
        vro.readahead_size = kSnapshotReadahead;
        vro.fill_cache = false;
      }
      versions_.reset(db_->NewIterator(vro, versions));
    }
    if (!range_.upper.empty()) {
      upper_slice_ = rocksdb::Slice(range_.upper);
      ro.iterate_upper_bound = &upper_slice_;
    }
    it_.reset(db_->NewIterator(ro, state));
    it_->Seek(range_.lower);
  }
  ~SnapshotCursorImpl() override {
    it_.reset();
    versions_.reset();
    db_->ReleaseSnapshot(snap_);
  }

  absl::StatusOr<bool> Next() override {
    while (true) {
      if (!it_->Valid()) {
        CAIRN_RETURN_IF_ERROR(FromRocks(it_->status(), "snapshot scan"));
        return false;
      }
      CAIRN_ASSIGN_OR_RETURN(bool found, Step());
      if (found && (include_incomplete_ || entity_.complete)) return true;
    }
  }
  const Entity& entity() const override { return entity_; }
  uint64_t seq() const override { return seq_; }

 private:
  // Reads the entity at the state iterator and advances it.
  absl::StatusOr<bool> Step() {
    std::string_view key(it_->key().data(), it_->key().size());
    if (mode_ == Mode::kCurrent) {
      CAIRN_ASSIGN_OR_RETURN(records::StateValue s,
                             records::DecodeState(it_->value().ToStringView()));
      bool found = s.doc.has_value();
      if (found) CAIRN_RETURN_IF_ERROR(Fill(key, s.doc, s.complete, s.position,
                                            s.source, s.seq));
      it_->Next();
      return found;
    }
    size_t n = keys::EntityPrefixLength(key);
    if (n != key.size()) return absl::DataLossError("malformed key in snapshot scan");
    // An entity deleted at or before the point does not exist there: no
    // versions seek (a mostly-deleted collection then costs one state read
    // per tombstone, as the current state does).
    if (auto peek = records::PeekState(it_->value().ToStringView());
        peek && peek->deleted &&
        (mode_ == Mode::kAsOfSeq ? peek->last_change_seq <= seq_ : peek->position <= pos_)) {
      it_->Next();
      return false;
    }
    std::string entity(key);
    it_->Next();
    std::string target = entity;
    if (mode_ == Mode::kAsOfSeq) {
      keys::AppendU64(seq_, &target);
    } else {
      keys::AppendU64(pos_.timestamp, &target);
      keys::AppendU64(pos_.tick, &target);
      target.push_back('\xFF');  // after every source at exactly this position
    }
    versions_->SeekForPrev(target);
    if (!versions_->Valid()) {
      CAIRN_RETURN_IF_ERROR(FromRocks(versions_->status(), "snapshot seek"));
    }
    bool found = false;
    if (versions_->Valid() && versions_->key().starts_with(entity)) {
      std::string_view k(versions_->key().data(), versions_->key().size());
      std::string_view rest = k.substr(n);
      if (mode_ == Mode::kAsOfSeq) {
        CAIRN_ASSIGN_OR_RETURN(records::EntitySeqValue e,
                               records::DecodeEntitySeq(versions_->value().ToStringView()));
        uint64_t seq;
        keys::ConsumeU64(&rest, &seq);
        found = e.doc.has_value();
        if (found) CAIRN_RETURN_IF_ERROR(Fill(entity, e.doc, e.complete, e.position,
                                              e.source, seq));
      } else {
        CAIRN_ASSIGN_OR_RETURN(records::VersionValue v,
                               records::DecodeVersion(versions_->value().ToStringView()));
        Position p;
        std::string source;
        if (!keys::ConsumeU64(&rest, &p.timestamp) || !keys::ConsumeU64(&rest, &p.tick) ||
            !keys::ConsumeEscaped(&rest, &source)) {
          return absl::DataLossError("malformed history key");
        }
        found = v.after.has_value();
        if (found) CAIRN_RETURN_IF_ERROR(Fill(entity, v.after, v.complete, p,
                                              std::move(source), v.seq));
      }
    }
    return found;
  }

  absl::Status Fill(std::string_view entity, const Doc& doc, bool complete,
                    Position pos, std::string source, uint64_t seq) {
    std::string collection, key_json;
    CAIRN_RETURN_IF_ERROR(SplitEntity(entity, &collection, &key_json));
    entity_ = MakeEntity(std::move(collection), std::move(key_json), doc, complete,
                         pos, std::move(source), seq);
    return absl::OkStatus();
  }

  rocksdb::DB* db_;
  const rocksdb::Snapshot* snap_;
  Mode mode_;
  ScanRange range_;
  rocksdb::Slice upper_slice_;
  uint64_t seq_;
  Position pos_;
  bool include_incomplete_;
  std::unique_ptr<rocksdb::Iterator> it_;        // state: the entities
  std::unique_ptr<rocksdb::Iterator> versions_;  // point-in-time modes
  Entity entity_;
};

// ---------------------------------------------------------------------------

class StoreImpl : public Store {
 public:
  StoreImpl(const Options& options, std::string path)
      : options_(options), path_(std::move(path)) {
    if (!options_.now_micros) {
      options_.now_micros = [] { return static_cast<uint64_t>(absl::ToUnixMicros(absl::Now())); };
    }
  }
  ~StoreImpl() override;

  absl::Status Init();

  absl::StatusOr<IngestResult> Ingest(std::vector<Event> events,
                                      const IngestOptions& options) override;
  std::vector<absl::StatusOr<IngestResult>> IngestBatches(std::vector<Batch> batches) override;
  absl::StatusOr<Entity> Get(std::string_view collection, std::string_view key) override;
  absl::StatusOr<std::unique_ptr<SnapshotCursor>> NewSnapshot(
      const SnapshotOptions& options) override;
  absl::StatusOr<std::vector<Version>> History(std::string_view collection,
                                               std::string_view key,
                                               const HistoryOptions& options) override;
  absl::StatusOr<std::unique_ptr<Subscription>> Subscribe(
      const SubscribeOptions& options) override;
  uint64_t LastSeq() const override { return last_seq_.load(std::memory_order_acquire); }
  bool AwaitCommit(uint64_t after_seq, absl::Duration timeout) override {
    std::atomic<bool> never{false};
    WaitForCommit(after_seq, absl::Now() + timeout, &never);
    return LastSeq() > after_seq;
  }
  StoreStats Stats() override;
  absl::Status CompactNow() override;

  absl::Status PutSource(const SourceDefinition& source) override;
  absl::StatusOr<SourceDefinition> GetSource(std::string_view name) override;
  absl::StatusOr<std::vector<SourceDefinition>> ListSources() override;
  absl::Status RemoveSource(std::string_view name) override;
  absl::StatusOr<std::string> OpenSession(std::string_view source,
                                          std::string_view collection,
                                          SessionMode mode) override;
  absl::StatusOr<std::vector<std::string>> SessionUpsert(
      std::string_view session_id, std::vector<SessionRecord> records) override;
  absl::StatusOr<std::vector<std::string>> SessionDelete(
      std::string_view session_id, std::vector<std::string> keys) override;
  absl::StatusOr<IngestResult> CloseSession(std::string_view session_id,
                                            bool commit) override;
  absl::StatusOr<SessionInfo> GetSession(std::string_view session_id) override;
  absl::Status PutCheckpoint(
      std::string_view name, uint64_t seq, const std::vector<std::string>& collections,
      const std::function<absl::Status(const CheckpointInfo&)>& may_move) override;
  absl::StatusOr<CheckpointInfo> GetCheckpointInfo(std::string_view name) override;
  absl::StatusOr<std::map<std::string, CheckpointInfo>> ListCheckpointInfos() override;
  absl::Status DeleteCheckpoint(std::string_view name) override;
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
  struct Writer {
    std::vector<Prepared>* events = nullptr;
    // Instead of events: work folded by the leader like a batch (session
    // commits), with the same save-point atomicity.
    std::function<absl::Status(BatchState*, IngestResult*)> task;
    // Runs alone and commits through SST ingestion (CommitExclusive).
    bool exclusive = false;
    bool durable = false;
    bool done = false;
    absl::Status status;
    IngestResult result;
    absl::CondVar cv;
  };

  // State the leader mutates while folding one batch; merged into the
  // store's state only when the batch succeeds.
  struct BatchState {
    uint64_t next_seq = 0;
    std::map<std::string, SourceStats> sources;
    std::vector<std::pair<std::string, Marker>> markers;  // collection, marker
    std::vector<Change> changes;  // decoded, for the recent-changes ring
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
  absl::Status CommitSession(const std::string& id, const records::SessionValue& session,
                             BatchState* bs, IngestResult* result);
  absl::Status DropStaging(std::string_view id);
  Position NextSessionPosition(const std::string& source, uint64_t count);
  absl::Status CommitGroup(std::vector<Writer*>& group);
  absl::Status CommitExclusive(Writer* w);
  // During an exclusive commit: moves what batch_ holds into the SST files
  // (meta entries are kept aside for the final meta file) and clears it.
  absl::Status SpillBatch();
  absl::Status ApplyBatch(Writer* w, BatchState* bs);
  absl::Status ApplyEvent(Prepared& p, BatchState* bs, IngestResult* result);
  absl::Status ApplyTruncate(const Prepared& p, BatchState* bs);
  absl::Status ApplyToEntity(std::string_view collection, std::string_view key_bytes,
                             const std::string& entity, const VersionPos& at, Op op,
                             const std::string& payload, bool snapshot, BatchState* bs,
                             bool check_markers);
  absl::Status EnforceMarkers(std::string_view collection, std::string_view key_bytes,
                              const std::string& entity, const VersionPos& at,
                              BatchState* bs);
  absl::StatusOr<std::optional<std::string>> BatchGet(Cf cf, const std::string& key);
  // Puts into the group's batch. The change feed and entity_seq are never
  // read back while a group is folded, so their entries skip the batch index
  // (a third of its inserts); a session commit indexes everything, since its
  // spill reads the batch through the index.
  absl::Status BatchPut(Cf cf, std::string_view key, std::string_view value);
  SourceStats& StatsFor(BatchState* bs, const std::string& source);

  absl::Status LoadMeta();
  absl::Status CleanClosedSessions();
  absl::Status UpdateHorizon();
  void RetentionLoop();

  Options options_;
  std::string path_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
  std::vector<std::unique_ptr<RetentionFilter>> filters_;
  Horizon horizon_;

  // Writer queue (group commit).
  absl::Mutex mu_;
  std::deque<Writer*> writers_ ABSL_GUARDED_BY(mu_);

  // Leader-only state (see the file comment).
  std::unique_ptr<rocksdb::WriteBatchWithIndex> batch_;
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
  };
  std::unique_ptr<Spill> spill_;

  absl::Mutex stats_mu_;  // guards published copies for Stats()
  std::map<std::string, SourceStats> published_sources_ ABSL_GUARDED_BY(stats_mu_);

  std::atomic<uint64_t> last_seq_{0};
  // What the commit path has written since open (StoreStats).
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint64_t> records_written_{0};
  std::atomic<uint64_t> bytes_written_{0};

  // The most recent committed changes, decoded, consecutive by seq: what
  // subscriptions near the head read (ReadChanges) instead of each opening
  // an iterator and decoding the same records. Filled only while some
  // subscription exists (capture_ is decided per group); bounded in count
  // and bytes; a gap (a session commit, a group without capture) restarts it.
  static constexpr size_t kRecentChanges = 16384;
  static constexpr size_t kRecentBytes = 32 << 20;
  absl::Mutex recent_mu_;
  std::deque<Change> recent_ ABSL_GUARDED_BY(recent_mu_);
  size_t recent_bytes_ ABSL_GUARDED_BY(recent_mu_) = 0;
  std::atomic<int> subscriptions_{0};
  bool capture_ = false;  // this group records its changes (leader only)
  void AppendRecent(std::vector<Change> changes);

  // Serializes session bookkeeping (record counts, position assignment).
  absl::Mutex checkpoint_mu_;  // one checkpoint writer at a time
  absl::Mutex sessions_mu_;
  std::map<std::string, Position> session_positions_ ABSL_GUARDED_BY(sessions_mu_);
  absl::Mutex notify_mu_;
  absl::CondVar notify_cv_;

  absl::Mutex retention_opts_mu_;  // guards options_.retention after Init
  absl::Mutex retention_mu_;
  absl::CondVar retention_cv_;
  bool stopping_ ABSL_GUARDED_BY(retention_mu_) = false;
  std::thread retention_thread_;
};

// ---------------------------------------------------------------------------
// Subscriptions.

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return v.empty() || std::find(v.begin(), v.end(), s) != v.end();
}

class SubscriptionImpl : public Subscription {
 public:
  static constexpr size_t kChunk = 256;

  SubscriptionImpl(StoreImpl* store, SubscribeOptions options,
                   std::vector<std::string> key_bytes, std::string prefix_bytes,
                   std::unique_ptr<SnapshotCursor> snapshot, uint64_t start_seq)
      : store_(store), options_(std::move(options)), key_bytes_(std::move(key_bytes)),
        prefix_bytes_(std::move(prefix_bytes)), snapshot_(std::move(snapshot)),
        cursor_(start_seq) {
    store_->AddSubscriber();
  }
  ~SubscriptionImpl() override { store_->RemoveSubscriber(); }

  absl::StatusOr<bool> Next(absl::Duration timeout, SubscriptionItem* item) override {
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      if (cancelled_.load()) return absl::CancelledError("subscription cancelled");
      if (snapshot_) {
        CAIRN_ASSIGN_OR_RETURN(bool more, snapshot_->Next());
        if (more) {
          const Entity& e = snapshot_->entity();
          // An entity belongs to the source of its newest version: the
          // sources filter means the same here as for changes.
          if (!Contains(options_.filter.sources, e.source)) continue;
          if (!MatchesEntity(e.collection, e.key)) continue;
          item->kind = SubscriptionItem::Kind::kSnapshotEntity;
          item->entity = e;
          return true;
        }
        item->kind = SubscriptionItem::Kind::kSnapshotEnd;
        item->seq = snapshot_->seq();
        snapshot_.reset();
        return true;
      }
      if (!buffer_.empty()) {
        item->kind = SubscriptionItem::Kind::kChange;
        item->change = std::move(buffer_.front());
        buffer_.pop_front();
        delivered_.store(item->change.seq);
        return true;
      }
      uint64_t last = store_->LastSeq();
      if (cursor_ < last) {
        uint64_t oldest = store_->horizon().oldest_seq.load();
        if (cursor_ + 1 < oldest) {
          return absl::OutOfRangeError(absl::StrCat(
              "changes after seq ", cursor_, " were removed by retention; oldest ",
              "available seq is ", oldest));
        }
        std::vector<Change> chunk;
        uint64_t read_to = cursor_;
        CAIRN_RETURN_IF_ERROR(store_->ReadChanges(cursor_, kChunk, &chunk, &read_to));
        if (read_to - cursor_ >= kChunk) behind_ = true;
        cursor_ = read_to;
        for (Change& c : chunk) {
          if (Matches(c)) buffer_.push_back(std::move(c));
        }
        if (buffer_.empty()) delivered_.store(cursor_);
        continue;
      }
      if (!caught_up_sent_ || behind_) {
        caught_up_sent_ = true;
        behind_ = false;
        item->kind = SubscriptionItem::Kind::kCaughtUp;
        item->seq = cursor_;
        return true;
      }
      if (absl::Now() >= deadline) return false;
      store_->WaitForCommit(cursor_, deadline, &cancelled_);
    }
  }

  void Cancel() override {
    cancelled_.store(true);
    store_->WakeWaiters();
  }
  uint64_t position() const override { return delivered_.load(); }

 private:
  bool MatchesEntity(std::string_view collection, std::string_view key_json) {
    if (!Contains(options_.filter.collections, collection)) return false;
    if (key_bytes_.empty() && prefix_bytes_.empty()) return true;
    auto kb = keys::EncodeKey(key_json);
    if (!kb.ok()) return false;
    return MatchesKey(*kb);
  }
  bool MatchesKey(std::string_view kb) {
    if (!prefix_bytes_.empty() && !kb.starts_with(prefix_bytes_)) return false;
    return key_bytes_.empty() ||
           std::find(key_bytes_.begin(), key_bytes_.end(), kb) != key_bytes_.end();
  }
  bool Matches(const Change& c) {
    if (!Contains(options_.filter.sources, c.source)) return false;
    return MatchesEntity(c.collection, c.key);
  }

  StoreImpl* store_;
  SubscribeOptions options_;
  std::vector<std::string> key_bytes_;
  std::string prefix_bytes_;
  std::unique_ptr<SnapshotCursor> snapshot_;
  uint64_t cursor_;  // last seq read from the change feed
  std::deque<Change> buffer_;
  bool caught_up_sent_ = false;
  bool behind_ = false;
  std::atomic<bool> cancelled_{false};
  std::atomic<uint64_t> delivered_{0};
};

// ---------------------------------------------------------------------------
// Open / close.

absl::Status StoreImpl::Init() {
  rocksdb::Options opts;
  opts.create_if_missing = options_.create_if_missing;
  opts.create_missing_column_families = true;
  opts.IncreaseParallelism(2);
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options_.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  // Index and filter blocks live in the (bounded) block cache instead of on
  // the heap per open file, so memory does not grow with the store; L0's are
  // pinned because every read touches them.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // Every block read from disk is checksummed: XXH3 is several times faster
  // than CRC32C without SSE4.2, which the packaged RocksDB is built without.
  table.checksum = rocksdb::kXXH3;
  auto table_factory = std::shared_ptr<rocksdb::TableFactory>(
      rocksdb::NewBlockBasedTableFactory(table));

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    rocksdb::ColumnFamilyOptions cfo(opts);
    cfo.table_factory = table_factory;
    // LZ4 decompresses about twice as fast as the default Snappy at a
    // similar ratio on JSON documents: a snapshot of past positions
    // decompresses one history block per entity.
    cfo.compression = rocksdb::kLZ4Compression;
    filters_.push_back(std::make_unique<RetentionFilter>(static_cast<Cf>(cf), &horizon_));
    if (cf != kMeta) cfo.compaction_filter = filters_.back().get();
    descriptors.emplace_back(CfName(cf), cfo);
  }
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  CAIRN_RETURN_IF_ERROR(FromRocks(
      rocksdb::DB::Open(rocksdb::DBOptions(opts), path_, descriptors, &handles, &raw),
      absl::StrCat("open ", path_)));
  db_.reset(raw);
  cfs_ = std::move(handles);
  // Without overwrite_key a Put only inserts into the batch index (no search
  // for an older entry of the key): reads still see a key's newest entry, and
  // the index iterator yields every entry (SpillBatch keeps the newest).
  batch_ = std::make_unique<rocksdb::WriteBatchWithIndex>(
      rocksdb::BytewiseComparator(), 0, /*overwrite_key=*/false);
  CAIRN_RETURN_IF_ERROR(LoadMeta());
  CAIRN_RETURN_IF_ERROR(CleanClosedSessions());
  // Retention given at open wins; otherwise the one last set at runtime.
  if (!options_.retention.max_age && !options_.retention.max_commits) {
    std::string v;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], kMetaRetention, &v);
    if (s.ok()) {
      std::string_view in = v;
      uint64_t age = 0, commits = 0;
      keys::ConsumeU64(&in, &age);
      keys::ConsumeU64(&in, &commits);
      if (age) options_.retention.max_age = absl::Microseconds(age);
      if (commits) options_.retention.max_commits = commits;
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "read retention");
    }
  }
  CAIRN_RETURN_IF_ERROR(UpdateHorizon());
  retention_thread_ = std::thread([this] { RetentionLoop(); });
  return absl::OkStatus();
}

StoreImpl::~StoreImpl() {
  {
    absl::MutexLock l(&retention_mu_);
    stopping_ = true;
    retention_cv_.SignalAll();
  }
  if (retention_thread_.joinable()) retention_thread_.join();
  if (db_) {
    for (auto* h : cfs_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->Close().PermitUncheckedError();
  }
}

absl::Status StoreImpl::LoadMeta() {
  rocksdb::ReadOptions ro;
  std::string v;
  rocksdb::Status s = db_->Get(ro, cfs_[kMeta], kMetaLastSeq, &v);
  if (s.ok()) {
    std::string_view in = v;
    uint64_t last = 0;
    if (!keys::ConsumeU64(&in, &last)) return absl::DataLossError("meta last_seq");
    last_seq_.store(last);
    next_seq_ = last + 1;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read last_seq");
  }
  s = db_->Get(ro, cfs_[kMeta], kMetaHorizon, &v);
  if (s.ok()) {
    std::string_view in = v;
    uint64_t seq = 0, ts = 0;
    keys::ConsumeU64(&in, &seq);
    keys::ConsumeU64(&in, &ts);
    horizon_.oldest_seq.store(seq);
    horizon_.oldest_timestamp.store(ts);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read horizon");
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kMeta]));
  for (it->Seek(kMetaSourcePrefix); it->Valid() && it->key().starts_with(kMetaSourcePrefix);
       it->Next()) {
    std::string name(it->key().ToStringView().substr(kMetaSourcePrefix.size()));
    sources_[name] = DecodeSourceStats(it->value().ToStringView());
  }
  for (it->Seek(kMetaTruncatePrefix);
       it->Valid() && it->key().starts_with(kMetaTruncatePrefix); it->Next()) {
    std::string_view in = it->key().ToStringView().substr(kMetaTruncatePrefix.size());
    std::string collection;
    Marker m;
    if (!keys::ConsumeEscaped(&in, &collection) ||
        !keys::ConsumeU64(&in, &m.at.position.timestamp) ||
        !keys::ConsumeU64(&in, &m.at.position.tick) ||
        !keys::ConsumeEscaped(&in, &m.at.source)) {
      return absl::DataLossError("malformed truncate marker");
    }
    markers_[collection].insert(m);
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "read meta"));
  absl::MutexLock l(&stats_mu_);
  published_sources_ = sources_;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Ingest.

absl::Status StoreImpl::Validate(std::vector<Event>& events, std::vector<Prepared>* out) {
  out->reserve(events.size());
  uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  for (size_t i = 0; i < events.size(); ++i) {
    Event& e = events[i];
    auto bad = [i](std::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": ", Av(what)));
    };
    if (absl::Status s = CheckName("source", e.source); !s.ok()) return bad(Sv(s.message()));
    if (absl::Status s = CheckName("collection", e.collection); !s.ok()) {
      return bad(Sv(s.message()));
    }
    if (e.position.timestamp == UINT64_MAX || e.position.tick == UINT64_MAX) {
      return bad("position overflow: timestamp and tick must be below 2^64-1");
    }
    if (e.position.timestamp < oldest_ts) {
      return absl::OutOfRangeError(absl::StrCat(
          "event ", i, ": position timestamp ", e.position.timestamp,
          " is older than the retention window; oldest available timestamp is ",
          oldest_ts));
    }
    Prepared p;
    switch (e.op) {
      case Op::kUpsert:
      case Op::kPatch: {
        auto canon = json::CanonicalObject(e.payload);
        if (!canon.ok()) {
          return bad(absl::StrCat("payload of ", OpName(e.op), ": ",
                                  canon.status().message()));
        }
        e.payload = *std::move(canon);
        break;
      }
      case Op::kDelete:
        e.payload.clear();
        break;
      case Op::kTruncate:
        if (!e.key.empty()) return bad("key must be empty for truncate");
        e.payload.clear();
        break;
      default:
        return bad(absl::StrCat("unknown op ", static_cast<int>(e.op)));
    }
    if (e.op != Op::kTruncate) {
      auto kb = keys::EncodeKey(e.key);
      if (!kb.ok()) return bad(Sv(kb.status().message()));
      p.key_bytes = *std::move(kb);
    }
    p.entity = keys::EntityPrefix(e.collection, p.key_bytes);
    p.log_key = keys::LogKey(e.source, e.position, e.collection, p.key_bytes);
    p.event = std::move(e);
    out->push_back(std::move(p));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::Prepare(std::vector<Event>& events, std::vector<Prepared>* out) {
  absl::Status s = Validate(events, out);
  if (!s.ok()) {
    // Count the rejection against the sources named in the batch; it is
    // persisted with the next commit.
    absl::MutexLock l(&stats_mu_);
    std::set<std::string> seen;
    for (const Event& e : events) {
      if (CheckName("source", e.source).ok() && seen.insert(e.source).second) {
        published_sources_[e.source].rejected_batches++;
      }
    }
  }
  return s;
}

absl::StatusOr<IngestResult> StoreImpl::Ingest(std::vector<Event> events,
                                               const IngestOptions& options) {
  std::vector<Prepared> prepared;
  CAIRN_RETURN_IF_ERROR(Prepare(events, &prepared));
  Writer w;
  w.events = &prepared;
  w.durable = options.durable;
  return Enqueue(w);
}

std::vector<absl::StatusOr<IngestResult>> StoreImpl::IngestBatches(std::vector<Batch> batches) {
  std::vector<absl::StatusOr<IngestResult>> out;
  out.reserve(batches.size());
  std::vector<std::vector<Prepared>> prepared(batches.size());
  std::deque<Writer> writers;  // CondVar members: never moved
  std::vector<Writer*> queued;
  std::vector<size_t> slot;  // out index of each queued writer
  for (size_t i = 0; i < batches.size(); ++i) {
    if (absl::Status s = Prepare(batches[i].events, &prepared[i]); !s.ok()) {
      out.emplace_back(std::move(s));
      continue;
    }
    out.emplace_back(IngestResult{});
    Writer& w = writers.emplace_back();
    w.events = &prepared[i];
    w.durable = batches[i].options.durable;
    queued.push_back(&w);
    slot.push_back(i);
  }
  if (!queued.empty()) EnqueueAll(queued);
  for (size_t k = 0; k < queued.size(); ++k) {
    Writer& w = *queued[k];
    if (w.status.ok()) {
      out[slot[k]] = std::move(w.result);
    } else {
      out[slot[k]] = std::move(w.status);
    }
  }
  return out;
}

absl::StatusOr<IngestResult> StoreImpl::Enqueue(Writer& w) {
  EnqueueAll({&w});
  if (!w.status.ok()) return w.status;
  return std::move(w.result);
}

void StoreImpl::EnqueueAll(const std::vector<Writer*>& ws) {
  absl::MutexLock l(&mu_);
  for (Writer* w : ws) writers_.push_back(w);
  // Ours are contiguous in the queue, so when one of them reaches the front
  // the ones before it are done: wait on the first not yet done.
  for (Writer* w : ws) {
    while (!w->done && w != writers_.front()) w->cv.Wait(&mu_);
    if (w->done) continue;
    // Leader: take the whole queue (bounded so one group stays reasonable).
    std::vector<Writer*> group;
    size_t total = 0;
    for (Writer* x : writers_) {
      // An exclusive writer commits alone.
      if (x->exclusive || (!group.empty() && group.front()->exclusive)) {
        if (group.empty()) group.push_back(x);
        break;
      }
      size_t n = x->events ? x->events->size() : 1;
      if (!group.empty() && total + n > 20000) break;
      group.push_back(x);
      total += n;
    }
    mu_.Unlock();
    absl::Status group_status = CommitGroup(group);
    mu_.Lock();
    for (Writer* x : group) {
      if (!group_status.ok() && x->status.ok()) x->status = group_status;
      writers_.pop_front();
      x->done = true;
      x->cv.Signal();
    }
    if (!writers_.empty()) writers_.front()->cv.Signal();
  }
}

SourceStats& StoreImpl::StatsFor(BatchState* bs, const std::string& source) {
  auto it = bs->sources.find(source);
  if (it != bs->sources.end()) return it->second;
  auto base = sources_.find(source);
  return bs->sources[source] = base == sources_.end() ? SourceStats{} : base->second;
}

absl::Status StoreImpl::CommitGroup(std::vector<Writer*>& group) {
  capture_ = false;
  if (group.size() == 1 && group[0]->exclusive) return CommitExclusive(group[0]);
  batch_->Clear();
  group_commit_micros_ = options_.now_micros();
  capture_ = subscriptions_.load(std::memory_order_relaxed) > 0;
  std::vector<Change> group_changes;
  bool sync = false;
  bool any_ok = false;
  std::vector<BatchState> states(group.size());
  for (size_t g = 0; g < group.size(); ++g) {
    Writer* w = group[g];
    BatchState& bs = states[g];
    bs.next_seq = next_seq_;
    batch_->SetSavePoint();
    w->result = IngestResult{};
    w->status = ApplyBatch(w, &bs);
    if (!w->status.ok()) {
      CAIRN_RETURN_IF_ERROR(FromRocks(batch_->RollbackToSavePoint(), "rollback"));
      continue;
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(batch_->PopSavePoint(), "pop save point"));
    // Merge the batch's state into the leader's.
    next_seq_ = bs.next_seq;
    for (auto& [name, s] : bs.sources) sources_[name] = s;
    for (auto& [collection, m] : bs.markers) markers_[collection].insert(m);
    for (Change& c : bs.changes) group_changes.push_back(std::move(c));
    sync |= w->durable;
    any_ok = true;
  }
  if (!any_ok) return absl::OkStatus();
  {
    // Rejected-batch counts recorded since the last commit ride along.
    absl::MutexLock l(&stats_mu_);
    for (auto& [name, pub] : published_sources_) {
      if (pub.rejected_batches > sources_[name].rejected_batches) {
        sources_[name].rejected_batches = pub.rejected_batches;
      }
    }
  }
  std::string last;
  keys::AppendU64(next_seq_ - 1, &last);
  CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kMeta], kMetaLastSeq, last), "put"));
  for (auto& [name, s] : sources_) {
    CAIRN_RETURN_IF_ERROR(FromRocks(
        batch_->Put(cfs_[kMeta], absl::StrCat(Av(kMetaSourcePrefix), name), EncodeSourceStats(s)),
        "put"));
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  const rocksdb::WriteBatch* wb = batch_->GetWriteBatch();
  absl::Status s = FromRocks(db_->Write(wo, batch_->GetWriteBatch()), "commit");
  if (s.ok()) {
    commits_.fetch_add(1, std::memory_order_relaxed);
    records_written_.fetch_add(wb->Count(), std::memory_order_relaxed);
    bytes_written_.fetch_add(wb->GetDataSize(), std::memory_order_relaxed);
  }
  if (!s.ok()) {
    // Nothing of the group is visible; reload the leader state from disk.
    sources_.clear();
    markers_.clear();
    next_seq_ = last_seq_.load() + 1;
    LoadMeta().IgnoreError();
    return s;
  }
  {
    absl::MutexLock l(&stats_mu_);
    for (auto& [name, st] : sources_) published_sources_[name] = st;
  }
  // Before the seq is published: a reader bounded by LastSeq() never looks
  // past what the ring or the store holds.
  if (capture_) AppendRecent(std::move(group_changes));
  {
    absl::MutexLock l(&notify_mu_);
    last_seq_.store(next_seq_ - 1, std::memory_order_release);
    notify_cv_.SignalAll();
  }
  return absl::OkStatus();
}

void StoreImpl::AppendRecent(std::vector<Change> changes) {
  if (changes.empty()) return;
  auto weight = [](const Change& c) {
    return c.before.size() + c.after.size() + c.key.size() + c.collection.size() +
           c.source.size() + sizeof(Change);
  };
  absl::MutexLock l(&recent_mu_);
  if (!recent_.empty() && recent_.back().seq + 1 != changes.front().seq) {
    recent_.clear();
    recent_bytes_ = 0;
  }
  for (Change& c : changes) {
    recent_bytes_ += weight(c);
    recent_.push_back(std::move(c));
  }
  while (!recent_.empty() &&
         (recent_.size() > kRecentChanges || recent_bytes_ > kRecentBytes)) {
    recent_bytes_ -= weight(recent_.front());
    recent_.pop_front();
  }
}

// A session commit of any size: the task folds into batch_ as usual, but
// every few MB the batch is spilled into one SST file per column family
// (keys arrive in order: entities in key order, positions and seqs
// increasing), and the files are ingested into all families in one atomic
// IngestExternalFiles at the end. Memory stays bounded by the spill size;
// readers see all of the commit or none of it; a crash before the ingestion
// leaves only unreferenced files (removed at the next commit or open).
absl::Status StoreImpl::SpillBatch() {
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    std::unique_ptr<rocksdb::WBWIIterator> it(batch_->NewIterator(cfs_[cf]));
    for (it->SeekToFirst(); it->Valid();) {
      rocksdb::WriteEntry e = it->Entry();
      if (e.type != rocksdb::kPutRecord) {
        return absl::InternalError("session commit produced a non-put entry");
      }
      // A key written more than once has its entries in write order: keep
      // the last.
      it->Next();
      if (it->Valid() && it->Entry().key == e.key) continue;
      if (cf == kMeta) {
        spill_->meta[e.key.ToString()] = e.value.ToString();
        continue;
      }
      // Roll to a new file every 64 MiB: a writer keeps its file's index
      // and filter in memory until Finish, so this bounds that too.
      auto& writer = spill_->writers[cf];
      if (writer && writer->FileSize() > (64u << 20)) {
        CAIRN_RETURN_IF_ERROR(FromRocks(writer->Finish(), "finish spill file"));
        writer.reset();
      }
      if (!writer) {
        writer = std::make_unique<rocksdb::SstFileWriter>(
            rocksdb::EnvOptions(), db_->GetOptions(cfs_[cf]), cfs_[cf]);
        spill_->files[cf].push_back(absl::StrCat(spill_->dir, "/", CfName(cf), "-",
                                                 spill_->files[cf].size(), ".sst"));
        CAIRN_RETURN_IF_ERROR(
            FromRocks(writer->Open(spill_->files[cf].back()), "open spill file"));
      }
      CAIRN_RETURN_IF_ERROR(
          FromRocks(spill_->writers[cf]->Put(e.key, e.value), "write spill file"));
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "read batch"));
  }
  batch_->Clear();
  return absl::OkStatus();
}

absl::Status StoreImpl::CommitExclusive(Writer* w) {
  batch_->Clear();
  group_commit_micros_ = options_.now_micros();
  std::string dir = absl::StrCat(path_, "/spill");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  spill_ = std::make_unique<Spill>();
  spill_->dir = dir;
  spill_->writers.resize(kNumCfs);
  spill_->files.resize(kNumCfs);
  BatchState bs;
  bs.next_seq = next_seq_;
  w->result = IngestResult{};
  absl::Status s = ApplyBatch(w, &bs);
  w->status = s;
  if (s.ok()) s = SpillBatch();
  if (s.ok()) {
    // Counters and the seq counter go in with the data, in the meta file.
    std::string last;
    keys::AppendU64(bs.next_seq - 1, &last);
    spill_->meta[std::string(kMetaLastSeq)] = last;
    for (const auto& [name, st] : bs.sources) {
      spill_->meta[absl::StrCat(Av(kMetaSourcePrefix), name)] = EncodeSourceStats(st);
    }
    rocksdb::SstFileWriter meta(rocksdb::EnvOptions(), db_->GetOptions(cfs_[kMeta]),
                                cfs_[kMeta]);
    spill_->files[kMeta] = {dir + "/meta.sst"};
    s = FromRocks(meta.Open(spill_->files[kMeta][0]), "open spill file");
    for (auto it = spill_->meta.begin(); s.ok() && it != spill_->meta.end(); ++it) {
      s = FromRocks(meta.Put(it->first, it->second), "write spill file");
    }
    if (s.ok()) s = FromRocks(meta.Finish(), "finish spill file");
  }
  std::vector<rocksdb::IngestExternalFileArg> args;
  for (size_t cf = 0; s.ok() && cf < kNumCfs; ++cf) {
    if (cf != kMeta && spill_->writers[cf]) {
      s = FromRocks(spill_->writers[cf]->Finish(), "finish spill file");
    }
    if (!s.ok() || spill_->files[cf].empty()) continue;
    rocksdb::IngestExternalFileArg arg;
    arg.column_family = cfs_[cf];
    arg.external_files = spill_->files[cf];
    arg.options.move_files = true;
    args.push_back(std::move(arg));
  }
  if (s.ok()) s = FromRocks(db_->IngestExternalFiles(args), "ingest session commit");
  spill_.reset();
  batch_->Clear();
  std::filesystem::remove_all(dir);
  if (!w->status.ok() || !s.ok()) {
    if (w->status.ok()) w->status = s;
    return absl::OkStatus();  // only this writer failed; nothing was applied
  }
  next_seq_ = bs.next_seq;
  for (auto& [name, st] : bs.sources) sources_[name] = st;
  {
    absl::MutexLock l(&stats_mu_);
    for (auto& [name, st] : sources_) published_sources_[name] = st;
  }
  absl::MutexLock l(&notify_mu_);
  last_seq_.store(next_seq_ - 1, std::memory_order_release);
  notify_cv_.SignalAll();
  return absl::OkStatus();
}

absl::Status StoreImpl::ApplyBatch(Writer* w, BatchState* bs) {
  IngestResult& r = w->result;
  uint64_t first = bs->next_seq;
  if (w->task) {
    CAIRN_RETURN_IF_ERROR(w->task(bs, &r));
  } else {
    r.outcomes.reserve(w->events->size());
    for (Prepared& p : *w->events) {
      CAIRN_RETURN_IF_ERROR(ApplyEvent(p, bs, &r));
    }
  }
  if (bs->next_seq > first) {
    r.first_seq = first;
    r.last_seq = bs->next_seq - 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> StoreImpl::BatchGet(Cf cf,
                                                               const std::string& key) {
  std::string value;
  rocksdb::Status s =
      batch_->GetFromBatchAndDB(db_.get(), rocksdb::ReadOptions(), cfs_[cf], key, &value);
  if (s.IsNotFound()) return std::nullopt;
  CAIRN_RETURN_IF_ERROR(FromRocks(s, absl::StrCat("read ", CfName(cf))));
  return value;
}

absl::Status StoreImpl::BatchPut(Cf cf, std::string_view key, std::string_view value) {
  rocksdb::Status s;
  if ((cf == kChanges || cf == kEntitySeq) && !spill_) {
    // Appended to the batch without an index entry: reads through the index
    // would not see it (none happen), and a rollback to a save point drops
    // it like any entry (then re-indexes what is left).
    s = batch_->GetWriteBatch()->Put(cfs_[cf], key, value);
  } else {
    s = batch_->Put(cfs_[cf], key, value);
  }
  return FromRocks(s, absl::StrCat("put ", CfName(cf)));
}

absl::Status StoreImpl::ApplyEvent(Prepared& p, BatchState* bs, IngestResult* result) {
  const Event& e = p.event;
  SourceStats& stats = StatsFor(bs, e.source);
  // Log keys begin with (source, position) and the source's last_position is
  // the newest position it ever logged (committed atomically with the log),
  // so an event past it cannot be a duplicate: in-order events skip the read.
  std::optional<std::string> existing;
  if (e.position <= stats.last_position) {
    CAIRN_ASSIGN_OR_RETURN(existing, BatchGet(kLog, p.log_key));
  }
  if (existing) {
    CAIRN_ASSIGN_OR_RETURN(records::LogValue logged, records::DecodeLog(*existing));
    bool same = logged.op == e.op && logged.payload == e.payload &&
                logged.snapshot == e.snapshot;
    result->outcomes.push_back(same ? Outcome::kDuplicate : Outcome::kConflict);
    (same ? result->duplicates : result->conflicts)++;
    (same ? stats.duplicates : stats.conflicts)++;
    return absl::OkStatus();
  }
  if (e.op == Op::kTruncate) {
    CAIRN_RETURN_IF_ERROR(ApplyTruncate(p, bs));
  } else {
    CAIRN_RETURN_IF_ERROR(ApplyToEntity(e.collection, p.key_bytes, p.entity,
                                        {e.position, e.source}, e.op, e.payload,
                                        e.snapshot, bs, /*check_markers=*/true));
  }
  records::LogValue log;
  log.op = e.op;
  log.payload = e.payload;
  log.raw = e.raw;
  log.event_id = e.event_id;
  log.snapshot = e.snapshot;
  log.seq = bs->next_seq - 1;
  log.ingest_micros = group_commit_micros_;
  CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kLog], p.log_key, records::Encode(log)),
                                  "put log"));
  result->outcomes.push_back(Outcome::kApplied);
  result->applied++;
  stats.accepted++;
  stats.last_position = std::max(stats.last_position, e.position);
  return absl::OkStatus();
}

absl::Status StoreImpl::ApplyTruncate(const Prepared& p, BatchState* bs) {
  const Event& e = p.event;
  Marker m{{e.position, e.source}};
  std::string marker_key(kMetaTruncatePrefix);
  keys::AppendEscaped(e.collection, &marker_key);
  keys::AppendU64(e.position.timestamp, &marker_key);
  keys::AppendU64(e.position.tick, &marker_key);
  keys::AppendEscaped(e.source, &marker_key);
  CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kMeta], marker_key, ""), "put marker"));
  bs->markers.emplace_back(e.collection, m);

  // Every entity the collection has ever had gets a truncate version at the
  // marker; entities first seen later get theirs in EnforceMarkers.
  std::string lower;
  keys::AppendEscaped(e.collection, &lower);
  std::string upper = keys::PrefixSuccessor(lower);
  std::vector<std::string> entities;
  {
    rocksdb::ReadOptions ro;
    rocksdb::Slice ub(upper);
    ro.iterate_upper_bound = &ub;
    std::unique_ptr<rocksdb::Iterator> it(
        batch_->NewIteratorWithBase(cfs_[kState], db_->NewIterator(ro, cfs_[kState])));
    for (it->Seek(lower); it->Valid() && it->key().compare(upper) < 0; it->Next()) {
      entities.emplace_back(it->key().ToString());
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "scan state for truncate"));
  }
  for (const std::string& entity : entities) {
    std::string_view key_bytes = std::string_view(entity).substr(lower.size());
    CAIRN_RETURN_IF_ERROR(ApplyToEntity(e.collection, key_bytes, entity, m.at,
                                        Op::kTruncate, "", false, bs,
                                        /*check_markers=*/false));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::EnforceMarkers(std::string_view collection,
                                       std::string_view key_bytes,
                                       const std::string& entity, const VersionPos& at,
                                       BatchState* bs) {
  std::vector<Marker> pending;
  auto consider = [&](const Marker& m) {
    if (at < m.at) pending.push_back(m);
  };
  if (auto it = markers_.find(std::string(collection)); it != markers_.end()) {
    for (const Marker& m : it->second) consider(m);
  }
  for (const auto& [c, m] : bs->markers) {
    if (c == collection) consider(m);
  }
  for (const Marker& m : pending) {
    CAIRN_ASSIGN_OR_RETURN(
        std::optional<std::string> v,
        BatchGet(kHistory, keys::HistoryKey(entity, m.at.position, m.at.source)));
    if (v) continue;
    CAIRN_RETURN_IF_ERROR(ApplyToEntity(collection, key_bytes, entity, m.at,
                                        Op::kTruncate, "", false, bs, false));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::ApplyToEntity(std::string_view collection,
                                      std::string_view key_bytes,
                                      const std::string& entity, const VersionPos& at,
                                      Op op, const std::string& payload, bool snapshot,
                                      BatchState* bs, bool check_markers) {
  const std::string state_key = entity;
  CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> state_raw, BatchGet(kState, state_key));
  std::optional<records::StateValue> state;
  if (state_raw) {
    CAIRN_ASSIGN_OR_RETURN(state, records::DecodeState(*state_raw));
  }

  // Folds one version onto (doc, complete).
  auto fold = [](Op vop, const std::string& vpayload, const Doc& before,
                 bool before_complete, Doc* after, bool* complete) -> absl::Status {
    switch (vop) {
      case Op::kUpsert:
        *after = vpayload;
        *complete = true;
        return absl::OkStatus();
      case Op::kPatch: {
        CAIRN_ASSIGN_OR_RETURN(std::string merged,
                               json::ApplyMergePatch(before ? *before : "", vpayload));
        *after = std::move(merged);
        *complete = before ? before_complete : false;
        return absl::OkStatus();
      }
      default:
        *after = std::nullopt;
        *complete = true;
        return absl::OkStatus();
    }
  };

  records::VersionValue nv;
  nv.op = op;
  nv.snapshot = snapshot;
  if (op == Op::kPatch) nv.patch = payload;
  const std::string new_key = keys::HistoryKey(entity, at.position, at.source);

  records::StateValue ns = state ? *state : records::StateValue{};
  ns.versions++;
  // Versions whose records must be rewritten, with their new values.
  std::vector<std::pair<std::string, records::VersionValue>> rewrites;

  // Retention may already have dropped an expired tombstone (the newest
  // version of a deleted entity, or its entity_seq entry): such a record is
  // not written back when it gets a successor.
  const uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  const uint64_t oldest_seq = horizon_.oldest_seq.load();
  VersionPos newest = state ? VersionPos{state->position, state->source} : VersionPos{};
  const bool in_order = !state || newest < at;
  if (in_order) {
    // In order: fold onto the current state.
    CAIRN_RETURN_IF_ERROR(fold(op, payload, state ? state->doc : std::nullopt,
                               state ? state->complete : true, &nv.after, &nv.complete));
    if (state && !state->newest_op) {
      // A state record written before it carried the newest version's
      // fields: read the predecessor back (this event's state has them).
      std::string pred_key = keys::HistoryKey(entity, state->position, state->source);
      CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> pred_raw, BatchGet(kHistory, pred_key));
      if (pred_raw) {
        CAIRN_ASSIGN_OR_RETURN(records::VersionValue pred, records::DecodeVersion(*pred_raw));
        pred.next_timestamp = at.position.timestamp;
        rewrites.emplace_back(std::move(pred_key), std::move(pred));
      }
    } else if (state && (state->doc || state->position.timestamp >= oldest_ts)) {
      // The predecessor is the newest version, rebuilt from the state record
      // instead of read back, and given its successor's timestamp.
      records::VersionValue pred{.op = *state->newest_op,
                                 .seq = state->newest_seq,
                                 .patch = state->newest_patch,
                                 .after = state->doc,
                                 .complete = state->complete,
                                 .snapshot = state->newest_snapshot,
                                 .next_timestamp = at.position.timestamp};
      rewrites.emplace_back(keys::HistoryKey(entity, state->position, state->source),
                            std::move(pred));
    }
    ns.doc = nv.after;
    ns.complete = nv.complete;
    ns.position = at.position;
    ns.source = at.source;
  } else {
    // Late: insert in order and re-fold the versions after it.
    rocksdb::ReadOptions ro;
    std::string upper = keys::PrefixSuccessor(entity);
    rocksdb::Slice ub(upper);
    ro.iterate_upper_bound = &ub;
    std::unique_ptr<rocksdb::Iterator> it(
        batch_->NewIteratorWithBase(cfs_[kHistory], db_->NewIterator(ro, cfs_[kHistory])));
    Doc before;
    bool before_complete = true;
    it->SeekForPrev(new_key);
    if (it->Valid() && it->key().starts_with(entity)) {
      CAIRN_ASSIGN_OR_RETURN(records::VersionValue pred,
                             records::DecodeVersion(it->value().ToStringView()));
      before = pred.after;
      before_complete = pred.complete;
      pred.next_timestamp = at.position.timestamp;
      rewrites.emplace_back(it->key().ToString(), std::move(pred));
    }
    CAIRN_RETURN_IF_ERROR(fold(op, payload, before, before_complete, &nv.after, &nv.complete));
    Doc running = nv.after;
    bool running_complete = nv.complete;
    bool reached_end = true;
    it->Seek(new_key);
    if (it->Valid() && it->key().compare(new_key) == 0) {
      return absl::InternalError("history version exists for an event not in the log");
    }
    bool first = true;
    for (; it->Valid() && it->key().starts_with(entity); it->Next()) {
      std::string_view rest = it->key().ToStringView().substr(entity.size());
      uint64_t ts = 0;
      keys::ConsumeU64(&rest, &ts);
      if (first) {
        nv.next_timestamp = ts;
        first = false;
      }
      CAIRN_ASSIGN_OR_RETURN(records::VersionValue later,
                             records::DecodeVersion(it->value().ToStringView()));
      if (later.op != Op::kPatch) {
        // Its after-image does not depend on what came before: stop here.
        running = later.after;
        running_complete = later.complete;
        reached_end = false;
        break;
      }
      Doc after;
      bool complete;
      CAIRN_RETURN_IF_ERROR(fold(later.op, later.patch, running, running_complete, &after,
                                 &complete));
      if (after != later.after || complete != later.complete) {
        later.after = after;
        later.complete = complete;
        rewrites.emplace_back(it->key().ToString(), later);
      }
      running = std::move(after);
      running_complete = complete;
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "scan history"));
    if (reached_end) {
      ns.doc = running;
      ns.complete = running_complete;
    }
  }

  // A change iff the visible state changed.
  bool existed = state && state->doc.has_value();
  bool changed = !state || ns.doc != state->doc || ns.complete != state->complete;
  if (!state && !ns.doc) changed = false;  // deleting what never existed
  uint64_t seq = bs->next_seq - 1;
  if (changed) {
    seq = bs->next_seq++;
    records::ChangeValue c;
    c.collection = std::string(collection);
    c.key_bytes = std::string(key_bytes);
    c.op = !ns.doc ? Op::kDelete : (op == Op::kPatch && existed ? Op::kPatch : Op::kUpsert);
    c.before = state ? state->doc : std::nullopt;
    c.after = ns.doc;
    c.position = at.position;
    c.source = at.source;
    c.commit_micros = group_commit_micros_;
    c.complete = ns.complete;
    CAIRN_RETURN_IF_ERROR(BatchPut(kChanges, keys::SeqKey(seq), records::Encode(c)));
    if (capture_) {
      CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(c.key_bytes));
      bs->changes.push_back({.seq = seq,
                             .collection = std::move(c.collection),
                             .key = std::move(key_json),
                             .op = c.op,
                             .before = c.before ? *std::move(c.before) : "",
                             .after = c.after ? *std::move(c.after) : "",
                             .position = c.position,
                             .source = std::move(c.source),
                             .complete = c.complete});
    }
    if (state && state->last_change_seq != 0 && !state->newest_op) {
      // Written before the state record carried the entry's position: read
      // the previous entry back.
      std::string prev_key = keys::EntitySeqKey(entity, state->last_change_seq);
      CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> prev_raw, BatchGet(kEntitySeq, prev_key));
      if (prev_raw) {
        CAIRN_ASSIGN_OR_RETURN(records::EntitySeqValue prev, records::DecodeEntitySeq(*prev_raw));
        prev.superseded_seq = seq;
        CAIRN_RETURN_IF_ERROR(BatchPut(kEntitySeq, prev_key, records::Encode(prev)));
      }
    } else if (state && state->last_change_seq != 0 &&
               (state->doc || state->last_change_seq >= oldest_seq ||
                state->change_position.timestamp >= oldest_ts)) {
      // The previous entry holds the state as of the last change, which is
      // still the state's document and completeness (else there would have
      // been a change since): rebuilt, not read back, and marked superseded.
      records::EntitySeqValue prev{.doc = state->doc,
                                   .complete = state->complete,
                                   .position = state->change_position,
                                   .source = state->change_source,
                                   .superseded_seq = seq};
      CAIRN_RETURN_IF_ERROR(BatchPut(kEntitySeq, keys::EntitySeqKey(entity, state->last_change_seq),
                                     records::Encode(prev)));
    }
    records::EntitySeqValue es;
    es.doc = ns.doc;
    es.complete = ns.complete;
    es.position = ns.position;
    es.source = ns.source;
    CAIRN_RETURN_IF_ERROR(
        BatchPut(kEntitySeq, keys::EntitySeqKey(entity, seq), records::Encode(es)));
    ns.seq = seq;
    ns.last_change_seq = seq;
    ns.change_position = ns.position;
    ns.change_source = ns.source;
  }
  nv.seq = seq;
  if (in_order) {
    ns.newest_op = op;
    ns.newest_seq = seq;
    ns.newest_patch = op == Op::kPatch ? payload : "";
    ns.newest_snapshot = snapshot;
  }
  for (auto& [k, v] : rewrites) {
    CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kHistory], k, records::Encode(v)),
                                    "put history"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kHistory], new_key, records::Encode(nv)),
                                  "put history"));
  CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kState], state_key, records::Encode(ns)),
                                  "put state"));
  if (check_markers) {
    CAIRN_RETURN_IF_ERROR(EnforceMarkers(collection, key_bytes, entity, at, bs));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Reads.

absl::StatusOr<Entity> StoreImpl::Get(std::string_view collection, std::string_view key) {
  auto kb = keys::EncodeKey(key);
  if (!kb.ok()) return absl::InvalidArgumentError(kb.status().message());
  std::string entity = keys::EntityPrefix(collection, *kb);
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kState], entity, &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no entity ", Av(Excerpt(key)), " in ", Av(Excerpt(collection))));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get"));
  CAIRN_ASSIGN_OR_RETURN(records::StateValue st, records::DecodeState(v));
  if (!st.doc) {
    return absl::NotFoundError(absl::StrCat("entity ", Av(Excerpt(key)), " in ", Av(Excerpt(collection)),
                                            " was deleted at seq ", st.seq));
  }
  CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(*kb));
  return MakeEntity(std::string(collection), std::move(key_json), st.doc, st.complete,
                    st.position, st.source, st.seq);
}

absl::StatusOr<std::unique_ptr<SnapshotCursor>> StoreImpl::NewSnapshot(
    const SnapshotOptions& o) {
  if (o.as_of_seq && o.as_of_position) {
    return absl::InvalidArgumentError("as_of_seq and as_of_position are exclusive");
  }
  CAIRN_ASSIGN_OR_RETURN(ScanRange range, SnapshotRange(o));
  uint64_t last = LastSeq();
  const rocksdb::Snapshot* snap = db_->GetSnapshot();
  auto mode = SnapshotCursorImpl::Mode::kCurrent;
  Cf cf = kState;
  uint64_t seq = last;
  Position pos;
  if (o.as_of_seq) {
    uint64_t oldest = horizon_.oldest_seq.load();
    if (*o.as_of_seq < oldest || *o.as_of_seq > last) {
      db_->ReleaseSnapshot(snap);
      return absl::OutOfRangeError(absl::StrCat(
          "seq ", *o.as_of_seq, " is outside the available range: oldest available seq is ",
          oldest, ", last committed seq is ", last));
    }
    mode = SnapshotCursorImpl::Mode::kAsOfSeq;
    cf = kEntitySeq;
    seq = *o.as_of_seq;
  } else if (o.as_of_position) {
    uint64_t oldest = horizon_.oldest_timestamp.load();
    if (o.as_of_position->timestamp < oldest) {
      db_->ReleaseSnapshot(snap);
      return absl::OutOfRangeError(absl::StrCat(
          "position timestamp ", o.as_of_position->timestamp,
          " is older than the retention window; oldest available timestamp is ", oldest));
    }
    if (*o.as_of_position == Position{UINT64_MAX, UINT64_MAX}) {
      db_->ReleaseSnapshot(snap);
      return absl::InvalidArgumentError("position overflow");
    }
    mode = SnapshotCursorImpl::Mode::kAsOfPosition;
    cf = kHistory;
    pos = *o.as_of_position;
  }
  return std::unique_ptr<SnapshotCursor>(new SnapshotCursorImpl(
      db_.get(), cfs_[kState], cfs_[cf], snap, mode, std::move(range), seq, pos,
      o.include_incomplete, /*bulk=*/o.key_prefix.empty()));
}

absl::StatusOr<std::vector<Version>> StoreImpl::History(std::string_view collection,
                                                        std::string_view key,
                                                        const HistoryOptions& o) {
  auto kb = keys::EncodeKey(key);
  if (!kb.ok()) return absl::InvalidArgumentError(kb.status().message());
  if (o.from_seq && o.to_seq && *o.from_seq > *o.to_seq) {
    return absl::InvalidArgumentError(absl::StrCat("from_seq ", *o.from_seq,
                                                   " is after to_seq ", *o.to_seq));
  }
  if (o.from_position && o.to_position && *o.from_position > *o.to_position) {
    return absl::InvalidArgumentError("from_position is after to_position");
  }
  uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  uint64_t oldest_seq = horizon_.oldest_seq.load();
  if (o.from_position && o.from_position->timestamp < oldest_ts) {
    return absl::OutOfRangeError(absl::StrCat(
        "from_position timestamp ", o.from_position->timestamp,
        " is older than the retention window; oldest available timestamp is ", oldest_ts));
  }
  if (o.from_seq && *o.from_seq < oldest_seq) {
    return absl::OutOfRangeError(absl::StrCat("from_seq ", *o.from_seq,
                                              " is older than the retention window; ",
                                              "oldest available seq is ", oldest_seq));
  }
  std::string entity = keys::EntityPrefix(collection, *kb);
  std::string upper = keys::PrefixSuccessor(entity);
  rocksdb::ReadOptions ro;
  rocksdb::Slice ub(upper);
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kHistory]));
  Doc prev;
  if (o.from_position) {
    std::string start = keys::HistoryKey(entity, *o.from_position, "");
    it->SeekForPrev(start);
    if (it->Valid() && it->key().starts_with(entity) && it->key().compare(start) < 0) {
      CAIRN_ASSIGN_OR_RETURN(records::VersionValue v,
                             records::DecodeVersion(it->value().ToStringView()));
      prev = v.after;
    }
    it->Seek(start);
  } else {
    it->Seek(entity);
  }
  std::vector<Version> out;
  for (; it->Valid(); it->Next()) {
    std::string_view rest = it->key().ToStringView().substr(entity.size());
    Version ver;
    if (!keys::ConsumeU64(&rest, &ver.position.timestamp) ||
        !keys::ConsumeU64(&rest, &ver.position.tick) ||
        !keys::ConsumeEscaped(&rest, &ver.source)) {
      return absl::DataLossError("malformed history key");
    }
    if (o.to_position && ver.position > *o.to_position) break;
    CAIRN_ASSIGN_OR_RETURN(records::VersionValue v,
                           records::DecodeVersion(it->value().ToStringView()));
    Doc before = std::exchange(prev, v.after);
    // Versions below the window only seed `before` for the first one inside.
    if (ver.position.timestamp < oldest_ts) continue;
    if (o.from_seq && v.seq < *o.from_seq) continue;
    if (o.to_seq && v.seq > *o.to_seq) continue;
    ver.op = v.op;
    ver.seq = v.seq;
    ver.snapshot = v.snapshot;
    ver.complete = v.complete;
    ver.before = before ? *before : "";
    ver.after = v.after ? *v.after : "";
    out.push_back(std::move(ver));
    if (!o.reverse && o.limit && out.size() >= o.limit) break;
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "history scan"));
  if (o.reverse) {
    std::reverse(out.begin(), out.end());
    if (o.limit && out.size() > o.limit) out.resize(o.limit);
  }
  return out;
}

absl::Status StoreImpl::ReadChanges(uint64_t after_seq, size_t max,
                                    std::vector<Change>* out, uint64_t* last_read) {
  uint64_t last = LastSeq();
  {
    // From the recent-changes ring when it holds the next seq.
    absl::MutexLock l(&recent_mu_);
    if (!recent_.empty() && after_seq + 1 >= recent_.front().seq &&
        after_seq < recent_.back().seq && after_seq < last) {
      *last_read = after_seq;
      size_t n = 0;
      for (size_t i = after_seq + 1 - recent_.front().seq;
           i < recent_.size() && n < max && recent_[i].seq <= last; ++i, ++n) {
        out->push_back(recent_[i]);
        *last_read = recent_[i].seq;
      }
      // Done, or the ring ends before `last`: the store has the rest.
      if (n >= max || *last_read == last) return absl::OkStatus();
      max -= n;
      after_seq = *last_read;
    }
  }
  std::string lower = keys::SeqKey(after_seq + 1);
  std::string upper = keys::SeqKey(last + 1);
  rocksdb::ReadOptions ro;
  rocksdb::Slice ub(upper);
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kChanges]));
  *last_read = after_seq;
  size_t n = 0;
  for (it->Seek(lower); it->Valid() && n < max; it->Next(), ++n) {
    std::string_view k = it->key().ToStringView();
    uint64_t seq;
    keys::ConsumeU64(&k, &seq);
    CAIRN_ASSIGN_OR_RETURN(records::ChangeValue c,
                           records::DecodeChange(it->value().ToStringView()));
    Change ch;
    ch.seq = seq;
    ch.collection = std::move(c.collection);
    CAIRN_ASSIGN_OR_RETURN(ch.key, keys::KeyToJson(c.key_bytes));
    ch.op = c.op;
    ch.before = c.before ? *c.before : "";
    ch.after = c.after ? *c.after : "";
    ch.position = c.position;
    ch.source = std::move(c.source);
    ch.complete = c.complete;
    out->push_back(std::move(ch));
    *last_read = seq;
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "change feed scan"));
  // Seqs are dense: reaching `last` with fewer than `max` means we are done.
  if (n < max) *last_read = last;
  return absl::OkStatus();
}

void StoreImpl::WaitForCommit(uint64_t seq, absl::Time deadline,
                              const std::atomic<bool>* cancelled) {
  absl::MutexLock l(&notify_mu_);
  while (last_seq_.load() <= seq && !cancelled->load()) {
    if (notify_cv_.WaitWithDeadline(&notify_mu_, deadline)) return;
  }
}

absl::StatusOr<std::unique_ptr<Subscription>> StoreImpl::Subscribe(
    const SubscribeOptions& o) {
  std::vector<std::string> key_bytes;
  for (size_t i = 0; i < o.filter.keys.size(); ++i) {
    auto kb = keys::EncodeKey(o.filter.keys[i]);
    if (!kb.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("filter.keys[", i, "]: ", kb.status().message()));
    }
    key_bytes.push_back(*std::move(kb));
  }
  std::string prefix_bytes =
      o.filter.key_prefix.empty() ? "" : keys::StringKeyPrefix(o.filter.key_prefix);
  std::unique_ptr<SnapshotCursor> snapshot;
  uint64_t start = 0;
  switch (o.start) {
    case SubscribeOptions::Start::kFromSeq: {
      uint64_t oldest = horizon_.oldest_seq.load();
      if (uint64_t last = LastSeq(); o.from_seq > last) {
        // Waiting would wait for a seq issued to some other store (DESIGN §4).
        return absl::OutOfRangeError(absl::StrCat("from_seq ", o.from_seq,
                                                  " is after the last committed seq ", last));
      }
      if (o.from_seq + 1 < oldest) {
        return absl::OutOfRangeError(absl::StrCat(
            "from_seq ", o.from_seq, " is older than the retention window; oldest ",
            "available seq is ", oldest));
      }
      start = o.from_seq;
      break;
    }
    case SubscribeOptions::Start::kNow:
      start = LastSeq();
      break;
    case SubscribeOptions::Start::kSnapshot: {
      uint64_t n = LastSeq();
      SnapshotOptions so;
      so.as_of_seq = n;
      so.include_incomplete = o.include_incomplete;
      if (o.filter.collections.size() == 1) so.collection = o.filter.collections[0];
      if (!so.collection.empty()) so.key_prefix = o.filter.key_prefix;
      if (n == 0) so.as_of_seq.reset();  // empty store: nothing to read as of 0
      CAIRN_ASSIGN_OR_RETURN(snapshot, NewSnapshot(so));
      start = n;
      break;
    }
  }
  return std::unique_ptr<Subscription>(new SubscriptionImpl(
      this, o, std::move(key_bytes), std::move(prefix_bytes), std::move(snapshot), start));
}

StoreStats StoreImpl::Stats() {
  StoreStats s;
  s.last_seq = LastSeq();
  s.oldest_seq = horizon_.oldest_seq.load();
  s.oldest_position = {horizon_.oldest_timestamp.load(), 0};
  s.commits = commits_.load(std::memory_order_relaxed);
  s.records_written = records_written_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  absl::MutexLock l(&stats_mu_);
  s.sources = published_sources_;
  return s;
}

// ---------------------------------------------------------------------------
// Retention.

absl::Status StoreImpl::UpdateHorizon() {
  const RetentionOptions r = Retention();
  if (!r.max_age && !r.max_commits) return absl::OkStatus();
  uint64_t last = LastSeq();
  uint64_t oldest_seq = horizon_.oldest_seq.load();
  uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  if (r.max_commits && last > *r.max_commits) {
    oldest_seq = std::max(oldest_seq, last - *r.max_commits + 1);
  }
  if (r.max_age) {
    uint64_t now = options_.now_micros();
    uint64_t age = static_cast<uint64_t>(absl::ToInt64Microseconds(*r.max_age));
    uint64_t cutoff = now > age ? now - age : 0;
    oldest_ts = std::max(oldest_ts, cutoff);
    // Seqs are committed in time order: binary search the first change
    // committed at or after the cutoff.
    uint64_t lo = std::max<uint64_t>(oldest_seq, 1), hi = last + 1;
    while (lo < hi) {
      uint64_t mid = lo + (hi - lo) / 2;
      std::string v;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kChanges], keys::SeqKey(mid), &v);
      if (s.IsNotFound()) {
        lo = mid + 1;  // already removed: older than any earlier cutoff
        continue;
      }
      CAIRN_RETURN_IF_ERROR(FromRocks(s, "retention search"));
      CAIRN_ASSIGN_OR_RETURN(records::ChangeValue c, records::DecodeChange(v));
      if (c.commit_micros < cutoff) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    oldest_seq = std::max(oldest_seq, lo);
  }
  std::string v;
  keys::AppendU64(oldest_seq, &v);
  keys::AppendU64(oldest_ts, &v);
  // Persist before compaction may act on it, so a restart never answers a
  // point whose data is already gone.
  CAIRN_RETURN_IF_ERROR(FromRocks(
      db_->Put(rocksdb::WriteOptions(), cfs_[kMeta], kMetaHorizon, v), "put horizon"));
  horizon_.oldest_seq.store(oldest_seq);
  horizon_.oldest_timestamp.store(oldest_ts);
  return absl::OkStatus();
}

void StoreImpl::RetentionLoop() {
  absl::MutexLock l(&retention_mu_);
  while (!stopping_) {
    retention_cv_.WaitWithTimeout(&retention_mu_, options_.retention_interval);
    if (stopping_) break;
    retention_mu_.Unlock();
    UpdateHorizon().IgnoreError();  // retried next interval
    retention_mu_.Lock();
  }
}

absl::Status StoreImpl::CompactNow() {
  CAIRN_RETURN_IF_ERROR(UpdateHorizon());
  rocksdb::CompactRangeOptions cro;
  cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    CAIRN_RETURN_IF_ERROR(
        FromRocks(db_->CompactRange(cro, cfs_[cf], nullptr, nullptr), "compact"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Source registry.

absl::Status StoreImpl::ValidateSource(const SourceDefinition& s) {
  CAIRN_RETURN_IF_ERROR(CheckName("source name", s.name));
  if (std::find_if(std::begin(kFormats), std::end(kFormats),
                   [&](const char* f) { return s.format == f; }) == std::end(kFormats)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "source '", s.name, "': unknown format '", s.format,
        "' (debezium, goldengate, infosphere, sse-feed, datapoints, bitbroker, canonical)"));
  }
  for (const auto& [collection, fields] : s.key_fields) {
    if (collection.empty() || fields.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "source '", s.name, "': key_fields needs a collection and at least one field"));
    }
  }
  for (const auto& [collection, schema] : s.json_schemas) {
    auto doc = json::Parse(schema);
    if (!doc.ok() || !doc->IsObject()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "source '", s.name, "': json_schemas[", collection, "] is not a JSON object"));
    }
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::PutSource(const SourceDefinition& source) {
  CAIRN_RETURN_IF_ERROR(ValidateSource(source));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, cfs_[kMeta], absl::StrCat(Av(kMetaRegistryPrefix), source.name),
                            records::Encode(source)),
                   "put source");
}

absl::StatusOr<SourceDefinition> StoreImpl::GetSource(std::string_view name) {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta],
                               absl::StrCat(Av(kMetaRegistryPrefix), Av(name)), &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("source '", Av(Excerpt(name)), "' is not registered"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get source"));
  return records::DecodeSource(v);
}

absl::StatusOr<std::vector<SourceDefinition>> StoreImpl::ListSources() {
  std::vector<SourceDefinition> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(kMetaRegistryPrefix);
       it->Valid() && it->key().starts_with(kMetaRegistryPrefix); it->Next()) {
    CAIRN_ASSIGN_OR_RETURN(SourceDefinition d, records::DecodeSource(it->value().ToStringView()));
    out.push_back(std::move(d));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "list sources"));
  return out;
}

absl::Status StoreImpl::RemoveSource(std::string_view name) {
  CAIRN_RETURN_IF_ERROR(GetSource(name).status());
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(
      db_->Delete(wo, cfs_[kMeta], absl::StrCat(Av(kMetaRegistryPrefix), Av(name))),
      "remove source");
}

// ---------------------------------------------------------------------------
// Contribution sessions. Stream sessions ingest as records are posted.
// Accrue/replace sessions stage records in the staging CF (key: esc(session
// id) | canonical key; the last write of a key wins) and fold them at commit
// as one task in the writer queue, i.e. in one atomic RocksDB write.

std::string SessionKey(std::string_view id) {
  return absl::StrCat(Av(kMetaSessionPrefix), Av(id));
}

std::string StagingPrefix(std::string_view id) {
  std::string out;
  keys::AppendEscaped(id, &out);
  return out;
}

absl::StatusOr<records::SessionValue> StoreImpl::LoadSession(std::string_view id) {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], SessionKey(id), &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("unknown session '", Av(Excerpt(id)), "'"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get session"));
  return records::DecodeSession(v);
}

absl::StatusOr<records::SessionValue> StoreImpl::OpenSessionFor(std::string_view id) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue v, LoadSession(id));
  if (v.state != records::SessionState::kOpen) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", Av(id), "' is already closed (",
        v.state == records::SessionState::kCommitted ? "committed" : "discarded", ")"));
  }
  return v;
}

absl::Status StoreImpl::PutSession(std::string_view id, const records::SessionValue& v) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, cfs_[kMeta], SessionKey(id), records::Encode(v)),
                   "put session");
}

absl::Status StoreImpl::DropStaging(std::string_view id) {
  std::string lower = StagingPrefix(id);
  return FromRocks(db_->DeleteRange(rocksdb::WriteOptions(), cfs_[kStaging], lower,
                                    keys::PrefixSuccessor(lower)),
                   "drop staging");
}

absl::Status StoreImpl::CleanClosedSessions() {
  // A crash between a session's commit (or discard) and the removal of its
  // staged records leaves them behind; the session record says which.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(kMetaSessionPrefix); it->Valid() && it->key().starts_with(kMetaSessionPrefix);
       it->Next()) {
    CAIRN_ASSIGN_OR_RETURN(records::SessionValue v,
                           records::DecodeSession(it->value().ToStringView()));
    if (v.state != records::SessionState::kOpen) {
      CAIRN_RETURN_IF_ERROR(
          DropStaging(it->key().ToStringView().substr(kMetaSessionPrefix.size())));
    }
  }
  return FromRocks(it->status(), "scan sessions");
}

Position StoreImpl::NextSessionPosition(const std::string& source, uint64_t count) {
  absl::MutexLock l(&sessions_mu_);
  Position& last = session_positions_[source];
  uint64_t now = options_.now_micros();
  Position p = now > last.timestamp ? Position{now, 0} : Position{last.timestamp, last.tick};
  last = {p.timestamp, p.tick + count};
  return p;
}

absl::StatusOr<std::string> StoreImpl::OpenSession(std::string_view source,
                                                   std::string_view collection,
                                                   SessionMode mode) {
  CAIRN_RETURN_IF_ERROR(GetSource(source).status());
  CAIRN_RETURN_IF_ERROR(CheckName("session collection", collection));
  if (mode != SessionMode::kStream && mode != SessionMode::kAccrue &&
      mode != SessionMode::kReplace) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown session mode ", static_cast<int>(mode)));
  }
  // 128 random bits: an id cannot be guessed from another one.
  std::random_device rd;
  auto r64 = [&rd] { return (uint64_t{rd()} << 32) | rd(); };
  std::string id =
      absl::StrCat(absl::Hex(r64(), absl::kZeroPad16), absl::Hex(r64(), absl::kZeroPad16));
  records::SessionValue v;
  v.source = std::string(source);
  v.collection = std::string(collection);
  v.mode = mode;
  v.opened_micros = options_.now_micros();
  CAIRN_RETURN_IF_ERROR(PutSession(id, v));
  return id;
}

absl::Status StoreImpl::IngestForStreamSession(std::string_view session_id,
                                               std::vector<Event> events) {
  CAIRN_ASSIGN_OR_RETURN(IngestResult r, Ingest(std::move(events), {}));
  if (r.first_seq == 0) return absl::OkStatus();
  // Counted for the report on close. A crash between the ingest and this
  // write loses the count of that post, never the post.
  absl::MutexLock l(&sessions_mu_);
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, LoadSession(session_id));
  session.applied += r.applied;
  if (session.first_seq == 0) session.first_seq = r.first_seq;
  session.last_seq = std::max(session.last_seq, r.last_seq);
  return PutSession(session_id, session);
}

absl::StatusOr<std::vector<std::string>> StoreImpl::SessionUpsert(
    std::string_view session_id, std::vector<SessionRecord> records) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(session_id));
  std::vector<std::string> key_bytes(records.size()), key_json(records.size());
  std::string errors;
  size_t bad = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    auto kb = keys::EncodeKey(records[i].key);
    auto doc = json::CanonicalObject(records[i].document);
    if (!kb.ok() || !doc.ok()) {
      absl::StrAppend(&errors, bad++ ? "; " : "", "record ", i, ": ",
                      !kb.ok() ? kb.status().message() : "document ",
                      !kb.ok() ? "" : doc.status().message());
      continue;
    }
    key_bytes[i] = *std::move(kb);
    key_json[i] = *keys::KeyToJson(key_bytes[i]);
    records[i].document = *std::move(doc);
  }
  if (bad) {
    return absl::InvalidArgumentError(
        absl::StrCat(bad, " of ", records.size(), " records rejected: ", errors));
  }
  if (session.mode == SessionMode::kStream) {
    Position p = NextSessionPosition(session.source, records.size());
    std::vector<Event> events(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      events[i] = Event{.source = session.source, .collection = session.collection,
                        .key = key_json[i], .position = {p.timestamp, p.tick + i},
                        .op = Op::kUpsert, .payload = std::move(records[i].document)};
    }
    CAIRN_RETURN_IF_ERROR(IngestForStreamSession(session_id, std::move(events)));
    return key_json;
  }
  absl::MutexLock l(&sessions_mu_);
  CAIRN_ASSIGN_OR_RETURN(session, OpenSessionFor(session_id));
  rocksdb::WriteBatch wb;
  std::string prefix = StagingPrefix(session_id);
  for (size_t i = 0; i < records.size(); ++i) {
    records::StagedValue sv{.op = Op::kUpsert, .doc = std::move(records[i].document)};
    CAIRN_RETURN_IF_ERROR(
        FromRocks(wb.Put(cfs_[kStaging], prefix + key_bytes[i], records::Encode(sv)), "stage"));
  }
  session.records += records.size();
  CAIRN_RETURN_IF_ERROR(
      FromRocks(wb.Put(cfs_[kMeta], SessionKey(session_id), records::Encode(session)), "stage"));
  CAIRN_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &wb), "stage"));
  return key_json;
}

absl::StatusOr<std::vector<std::string>> StoreImpl::SessionDelete(
    std::string_view session_id, std::vector<std::string> ids) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(session_id));
  std::vector<std::string> key_bytes(ids.size()), key_json(ids.size());
  std::string errors;
  size_t bad = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto kb = keys::EncodeKey(ids[i]);
    if (!kb.ok()) {
      absl::StrAppend(&errors, bad++ ? "; " : "", "record ", i, ": ", kb.status().message());
      continue;
    }
    key_bytes[i] = *std::move(kb);
    key_json[i] = *keys::KeyToJson(key_bytes[i]);
  }
  if (bad) {
    return absl::InvalidArgumentError(
        absl::StrCat(bad, " of ", ids.size(), " records rejected: ", errors));
  }
  if (session.mode == SessionMode::kStream) {
    Position p = NextSessionPosition(session.source, ids.size());
    std::vector<Event> events(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      events[i] = Event{.source = session.source, .collection = session.collection,
                        .key = key_json[i], .position = {p.timestamp, p.tick + i},
                        .op = Op::kDelete};
    }
    CAIRN_RETURN_IF_ERROR(IngestForStreamSession(session_id, std::move(events)));
    return key_json;
  }
  absl::MutexLock l(&sessions_mu_);
  CAIRN_ASSIGN_OR_RETURN(session, OpenSessionFor(session_id));
  rocksdb::WriteBatch wb;
  std::string prefix = StagingPrefix(session_id);
  for (size_t i = 0; i < ids.size(); ++i) {
    records::StagedValue sv{.op = Op::kDelete};
    CAIRN_RETURN_IF_ERROR(
        FromRocks(wb.Put(cfs_[kStaging], prefix + key_bytes[i], records::Encode(sv)), "stage"));
  }
  session.records += ids.size();
  CAIRN_RETURN_IF_ERROR(
      FromRocks(wb.Put(cfs_[kMeta], SessionKey(session_id), records::Encode(session)), "stage"));
  CAIRN_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &wb), "stage"));
  return key_json;
}

absl::Status StoreImpl::CommitSession(const std::string& id,
                                      const records::SessionValue& session,
                                      BatchState* bs, IngestResult* result) {
  // Staged keys and the collection's state share the canonical key order, so
  // a replace commit finds the records not re-sent with one merge pass.
  std::string prefix = StagingPrefix(id);
  std::string staging_upper = keys::PrefixSuccessor(prefix);
  rocksdb::ReadOptions sro;
  rocksdb::Slice sub(staging_upper);
  sro.iterate_upper_bound = &sub;
  std::unique_ptr<rocksdb::Iterator> staged(db_->NewIterator(sro, cfs_[kStaging]));
  staged->Seek(prefix);

  std::string coll_prefix;
  keys::AppendEscaped(session.collection, &coll_prefix);
  std::string state_upper = keys::PrefixSuccessor(coll_prefix);
  rocksdb::ReadOptions ro;
  rocksdb::Slice ub(state_upper);
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> state;
  if (session.mode == SessionMode::kReplace) {
    state.reset(db_->NewIterator(ro, cfs_[kState]));
    state->Seek(coll_prefix);
  }
  Position base = NextSessionPosition(session.source, session.records + 1);
  uint64_t tick = 0;
  auto apply = [&](std::string_view key_bytes, Op op, std::string doc) -> absl::Status {
    CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(key_bytes));
    std::vector<Event> one(1);
    one[0] = Event{.source = session.source, .collection = session.collection,
                   .key = std::move(key_json), .position = {base.timestamp, base.tick + tick++},
                   .op = op, .payload = std::move(doc)};
    std::vector<Prepared> prepared;
    CAIRN_RETURN_IF_ERROR(Validate(one, &prepared));
    CAIRN_RETURN_IF_ERROR(ApplyEvent(prepared[0], bs, result));
    // Between entities (never inside one), keep the batch small.
    constexpr size_t kSpillBytes = 8 << 20;
    if (spill_ && batch_->GetDataSize() > kSpillBytes) return SpillBatch();
    return absl::OkStatus();
  };
  while (staged->Valid() || (state && state->Valid())) {
    std::string_view skey = staged->Valid()
                                ? staged->key().ToStringView().substr(prefix.size())
                                : std::string_view();
    if (state && state->Valid()) {
      std::string_view ekey = state->key().ToStringView().substr(coll_prefix.size());
      if (!staged->Valid() || ekey < skey) {
        // Not re-sent: delete it if this source wrote it last and it exists.
        CAIRN_ASSIGN_OR_RETURN(records::StateValue sv,
                               records::DecodeState(state->value().ToStringView()));
        std::string k(ekey);
        state->Next();
        if (sv.doc && sv.source == session.source) {
          CAIRN_RETURN_IF_ERROR(apply(k, Op::kDelete, ""));
        }
        continue;
      }
      if (ekey == skey) state->Next();
    }
    CAIRN_ASSIGN_OR_RETURN(records::StagedValue v,
                           records::DecodeStaged(staged->value().ToStringView()));
    std::string k(skey);
    staged->Next();
    CAIRN_RETURN_IF_ERROR(apply(k, v.op, std::move(v.doc)));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(staged->status(), "scan staging"));
  if (state) CAIRN_RETURN_IF_ERROR(FromRocks(state->status(), "scan state"));
  records::SessionValue closed = session;
  closed.state = records::SessionState::kCommitted;
  return FromRocks(batch_->Put(cfs_[kMeta], SessionKey(id), records::Encode(closed)),
                   "close session");
}

absl::StatusOr<IngestResult> StoreImpl::CloseSession(std::string_view session_id,
                                                     bool commit) {
  std::string id(session_id);
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(id));
  records::SessionValue closed = session;
  closed.state = commit ? records::SessionState::kCommitted : records::SessionState::kDiscarded;
  if (session.mode == SessionMode::kStream || !commit) {
    // Under the lock, re-read: a stream post may have just added its count.
    absl::MutexLock l(&sessions_mu_);
    CAIRN_ASSIGN_OR_RETURN(session, OpenSessionFor(id));
    closed = session;
    closed.state = commit ? records::SessionState::kCommitted : records::SessionState::kDiscarded;
    CAIRN_RETURN_IF_ERROR(PutSession(id, closed));
    CAIRN_RETURN_IF_ERROR(DropStaging(id));
    if (session.mode != SessionMode::kStream) return IngestResult{};
    // What the session's posts applied as they came.
    return IngestResult{.first_seq = session.first_seq, .last_seq = session.last_seq,
                        .applied = session.applied};
  }
  Writer w;
  w.durable = true;
  w.exclusive = true;
  w.task = [&](BatchState* bs, IngestResult* result) {
    // Re-check inside the queue: a concurrent close may have won.
    CAIRN_ASSIGN_OR_RETURN(records::SessionValue current, OpenSessionFor(id));
    return CommitSession(id, current, bs, result);
  };
  CAIRN_ASSIGN_OR_RETURN(IngestResult result, Enqueue(w));
  CAIRN_RETURN_IF_ERROR(DropStaging(id));
  return result;
}

absl::StatusOr<SessionInfo> StoreImpl::GetSession(std::string_view session_id) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue v, LoadSession(session_id));
  return SessionInfo{.id = std::string(session_id), .source = v.source,
                     .collection = v.collection, .mode = v.mode, .records = v.records};
}

// ---------------------------------------------------------------------------
// Checkpoints, runtime retention, rejected-batch counting.

// A checkpoint's value: the seq (8 bytes, big-endian), then its scope: the
// number of collections (8 bytes) and each as (length, bytes), 8-byte
// lengths. A value of the seq alone (written before scopes existed) has the
// every-collection scope.
std::string CheckpointKey(std::string_view name) {
  return absl::StrCat(Av(kMetaCheckpointPrefix), Av(name));
}

std::string EncodeCheckpoint(const Store::CheckpointInfo& c) {
  std::string v;
  keys::AppendU64(c.seq, &v);
  keys::AppendU64(c.collections.size(), &v);
  for (const std::string& name : c.collections) {
    keys::AppendU64(name.size(), &v);
    v += name;
  }
  return v;
}

absl::StatusOr<Store::CheckpointInfo> DecodeCheckpoint(std::string_view in) {
  Store::CheckpointInfo c;
  uint64_t n = 0;
  if (!keys::ConsumeU64(&in, &c.seq)) return absl::DataLossError("malformed checkpoint");
  if (in.empty()) return c;
  if (!keys::ConsumeU64(&in, &n) || n > in.size()) {
    return absl::DataLossError("malformed checkpoint scope");
  }
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t len = 0;
    if (!keys::ConsumeU64(&in, &len) || len > in.size()) {
      return absl::DataLossError("malformed checkpoint scope");
    }
    c.collections.emplace_back(in.substr(0, len));
    in.remove_prefix(len);
  }
  return c;
}

absl::Status StoreImpl::PutCheckpoint(
    std::string_view name, uint64_t seq, const std::vector<std::string>& collections,
    const std::function<absl::Status(const CheckpointInfo&)>& may_move) {
  CAIRN_RETURN_IF_ERROR(CheckName("checkpoint name", name));
  for (const std::string& c : collections) CAIRN_RETURN_IF_ERROR(CheckName("collection", c));
  if (seq > LastSeq()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint seq ", seq, " is beyond the last committed seq ", LastSeq()));
  }
  // One writer at a time: the ownership check and the write are one step.
  absl::MutexLock l(&checkpoint_mu_);
  CheckpointInfo c{.seq = seq};
  auto existing = GetCheckpointInfo(name);
  if (existing.ok()) {
    if (may_move) CAIRN_RETURN_IF_ERROR(may_move(*existing));
    c.collections = std::move(existing->collections);  // moving keeps the scope
  } else if (absl::IsNotFound(existing.status())) {
    c.collections = collections;  // created for this scope, kept sorted and unique
    std::sort(c.collections.begin(), c.collections.end());
    c.collections.erase(std::unique(c.collections.begin(), c.collections.end()),
                        c.collections.end());
  } else {
    return existing.status();
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, cfs_[kMeta], CheckpointKey(name), EncodeCheckpoint(c)),
                   "put checkpoint");
}

absl::StatusOr<Store::CheckpointInfo> StoreImpl::GetCheckpointInfo(std::string_view name) {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], CheckpointKey(name), &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no checkpoint named '", Av(Excerpt(name)), "'"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get checkpoint"));
  return DecodeCheckpoint(v);
}

absl::StatusOr<std::map<std::string, Store::CheckpointInfo>> StoreImpl::ListCheckpointInfos() {
  std::map<std::string, CheckpointInfo> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(kMetaCheckpointPrefix);
       it->Valid() && it->key().starts_with(kMetaCheckpointPrefix); it->Next()) {
    CAIRN_ASSIGN_OR_RETURN(CheckpointInfo c, DecodeCheckpoint(it->value().ToStringView()));
    out[std::string(it->key().ToStringView().substr(kMetaCheckpointPrefix.size()))] =
        std::move(c);
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "list checkpoints"));
  return out;
}

absl::Status StoreImpl::DeleteCheckpoint(std::string_view name) {
  absl::MutexLock l(&checkpoint_mu_);
  CAIRN_RETURN_IF_ERROR(GetCheckpointInfo(name).status());
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(
      db_->Delete(wo, cfs_[kMeta], CheckpointKey(name)),
      "delete checkpoint");
}

absl::Status StoreImpl::SetRetention(const RetentionOptions& retention) {
  if (retention.max_age && *retention.max_age <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retention max_age must be positive");
  }
  if (retention.max_commits && *retention.max_commits == 0) {
    return absl::InvalidArgumentError("retention max_commits must be positive");
  }
  std::string v;
  keys::AppendU64(retention.max_age ? absl::ToInt64Microseconds(*retention.max_age) : 0, &v);
  keys::AppendU64(retention.max_commits.value_or(0), &v);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  CAIRN_RETURN_IF_ERROR(
      FromRocks(db_->Put(wo, cfs_[kMeta], kMetaRetention, v), "put retention"));
  absl::MutexLock l(&retention_opts_mu_);
  options_.retention = retention;
  return absl::OkStatus();
}

RetentionOptions StoreImpl::Retention() {
  absl::MutexLock l(&retention_opts_mu_);
  return options_.retention;
}

void StoreImpl::CountRejectedBatch(std::string_view source) {
  absl::MutexLock l(&stats_mu_);
  published_sources_[std::string(source)].rejected_batches++;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> Store::Open(std::string_view path,
                                                   const Options& options) {
  auto store = std::make_unique<StoreImpl>(options, std::string(path));
  CAIRN_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<Store>(std::move(store));
}

absl::Status Store::Snapshot(const SnapshotOptions& options,
                             const std::function<bool(const Entity&)>& fn) {
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotCursor> cursor, NewSnapshot(options));
  while (true) {
    CAIRN_ASSIGN_OR_RETURN(bool more, cursor->Next());
    if (!more || !fn(cursor->entity())) return absl::OkStatus();
  }
}

}  // namespace cairn
