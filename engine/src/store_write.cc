// The write path: validation, the writer queue and group commit, the
// exclusive commit of large session commits (spilled to SST files), and the
// application of events and truncates (ApplyToEntity is materializer.cc).
#include <algorithm>
#include <filesystem>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cairn/status.h"
#include "crash_point.h"
#include "json_doc.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {

using records::Doc;

namespace {

// A batch's weight in the writer queue (config.h kMaxGroupWeight).
size_t Weigh(const std::vector<Prepared>& events) {
  size_t bytes = 0;
  for (const Prepared& p : events) {
    const Event& e = p.event;
    bytes += kEventWeight + e.payload.size() + e.raw.size() + e.event_id.size() + p.entity.size();
  }
  return std::max(bytes, kEventWeight);
}

// The log key of an event's identity (a truncate's key is empty).
std::string LogKeyOf(const Prepared& p) {
  return keys::LogKey(p.event.source, p.event.position, p.event.collection, p.key_bytes);
}

}  // namespace

// ---------------------------------------------------------------------------
// Ingest.

absl::Status StoreImpl::Validate(std::vector<Event>& events, std::vector<Prepared>* out) {
  out->reserve(events.size());
  uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  for (size_t i = 0; i < events.size(); ++i) {
    Event& e = events[i];
    auto bad = [i](std::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("event ", i, ": ", AbslView(what)));
    };
    if (absl::Status s = CheckName("source", e.source); !s.ok()) return bad(StdView(s.message()));
    if (absl::Status s = CheckName("collection", e.collection); !s.ok()) {
      return bad(StdView(s.message()));
    }
    if (e.position.timestamp == UINT64_MAX || e.position.tick == UINT64_MAX) {
      return bad("position overflow: timestamp and tick must be below 2^64-1");
    }
    if (e.position.timestamp < oldest_ts) {
      return OlderThanRetention(
          absl::StrCat("event ", i, ": position timestamp ", e.position.timestamp),
          RetentionAxis::kTimestamp, oldest_ts);
    }
    Prepared p;
    switch (e.op) {
      case Op::kUpsert:
      case Op::kPatch: {
        auto canon = json::CanonicalObject(e.payload);
        if (!canon.ok()) {
          return bad(absl::StrCat("payload of ", OpName(e.op), ": ", canon.status().message()));
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
      if (!kb.ok()) return bad(StdView(kb.status().message()));
      p.key_bytes = *std::move(kb);
    }
    p.entity = keys::EntityPrefix(e.collection, p.key_bytes);
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
  CAIRN_RETURN_IF_ERROR(CheckSideRecords(options.side_records));
  std::vector<Prepared> prepared;
  CAIRN_RETURN_IF_ERROR(Prepare(events, &prepared));
  Writer w;
  w.events = &prepared;
  w.weight_bytes = Weigh(prepared);
  w.durable = options.durable;
  w.side_records = &options.side_records;
  return Enqueue(w);
}

std::vector<absl::StatusOr<IngestResult>> StoreImpl::IngestBatches(std::vector<Batch> batches) {
  std::vector<absl::StatusOr<IngestResult>> out(batches.size());
  std::vector<std::unique_ptr<PreparedBatch>> prepared;
  std::vector<size_t> slot;  // out index of each prepared batch
  for (size_t i = 0; i < batches.size(); ++i) {
    auto p = Prepare(std::move(batches[i]));
    if (!p.ok()) {
      out[i] = p.status();
      continue;
    }
    prepared.push_back(*std::move(p));
    slot.push_back(i);
  }
  std::vector<absl::StatusOr<IngestResult>> committed = IngestPrepared(std::move(prepared));
  for (size_t k = 0; k < committed.size(); ++k) out[slot[k]] = std::move(committed[k]);
  return out;
}

absl::StatusOr<std::unique_ptr<Store::PreparedBatch>> StoreImpl::Prepare(Batch batch) {
  CAIRN_RETURN_IF_ERROR(CheckSideRecords(batch.options.side_records));
  auto p = std::make_unique<PreparedBatchImpl>();
  CAIRN_RETURN_IF_ERROR(Prepare(batch.events, &p->events));
  p->options = batch.options;
  return p;
}

std::vector<absl::StatusOr<IngestResult>> StoreImpl::IngestPrepared(
    std::vector<std::unique_ptr<PreparedBatch>> batches) {
  std::deque<Writer> writers;  // CondVar members: never moved
  std::vector<Writer*> queued;
  for (auto& b : batches) {
    // Only this store's Prepare makes them.
    auto* p = static_cast<PreparedBatchImpl*>(b.get());
    Writer& w = writers.emplace_back();
    w.events = &p->events;
    w.weight_bytes = Weigh(p->events);
    w.durable = p->options.durable;
    w.side_records = &p->options.side_records;
    queued.push_back(&w);
  }
  if (!queued.empty()) EnqueueAll(queued);
  std::vector<absl::StatusOr<IngestResult>> out;
  out.reserve(queued.size());
  for (Writer* w : queued) {
    if (w->status.ok()) {
      out.emplace_back(std::move(w->result));
    } else {
      out.emplace_back(std::move(w->status));
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
  auto start = LatencyRecorder::Clock::now();
  write_queue_.Run(ws, [this](std::vector<Writer*>& group) { return CommitGroup(group); });
  for (const Writer* w : ws) {
    if (w->status.ok()) ingest_latency_.Record(start);  // committed batches only
  }
}

SourceStats& StoreImpl::StatsFor(BatchState* bs, const std::string& source) {
  auto it = bs->sources.find(source);
  if (it != bs->sources.end()) return it->second;
  auto base = sources_.find(source);
  return bs->sources[source] = base == sources_.end() ? SourceStats{} : base->second;
}

absl::Status StoreImpl::WriteResuming(const rocksdb::WriteOptions& wo, rocksdb::WriteBatch* wb,
                                      std::string_view what) {
  rocksdb::Status s = db_->Write(wo, wb);
  // A failed write applied nothing; after a resume it is written again.
  if (s.ok() || !s.IsIOError() || !Resume()) return FromRocks(s, what);
  return FromRocks(db_->Write(wo, wb), what);
}

bool StoreImpl::Resume() {
  absl::MutexLock l(&resume_mu_);
  rocksdb::Status r = db_->Resume();
  if (!r.ok()) return false;
  bg_errors_->Resumed();
  return true;
}

absl::Status StoreImpl::CommitGroup(std::vector<Writer*>& group) {
  capture_ = false;
  if (group.size() == 1 && group[0]->commit_alone) return CommitExclusive(group[0]);
  batch_->Clear();
  state_cache_.DropGroup();  // what a group that returned early left pending
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
      state_cache_.DropBatch();
      CAIRN_RETURN_IF_ERROR(FromRocks(batch_->RollbackToSavePoint(), "rollback"));
      continue;
    }
    state_cache_.KeepBatch();
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
        batch_->Put(cfs_[kMeta], keys::SourceStatsKey(name), EncodeSourceStats(s)), "put"));
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  rocksdb::WriteBatch* wb = batch_->GetWriteBatch();
  CrashPoint("commit.before_write");
  auto write_start = LatencyRecorder::Clock::now();
  absl::Status s = WriteResuming(wo, wb, "commit");
  if (s.ok()) (sync ? commit_sync_latency_ : commit_latency_).Record(write_start);
  if (!s.ok()) {
    // Nothing of the group is visible; reload the leader state from disk.
    state_cache_.DropGroup();
    sources_.clear();
    markers_.clear();
    next_seq_ = last_seq_.load() + 1;
    LoadMeta().IgnoreError();
    return s;
  }
  CrashPoint("commit.after_write");
  state_cache_.CommitGroup();
  commits_.fetch_add(1, std::memory_order_relaxed);
  records_written_.fetch_add(wb->Count(), std::memory_order_relaxed);
  bytes_written_.fetch_add(wb->GetDataSize(), std::memory_order_relaxed);
  {
    absl::MutexLock l(&stats_mu_);
    for (auto& [name, st] : sources_) published_sources_[name] = st;
  }
  // Before the seq is published: a reader bounded by LastSeq() never looks
  // past what the ring or the store holds.
  if (capture_) recent_.Append(std::move(group_changes));
  {
    absl::MutexLock l(&notify_mu_);
    last_seq_.store(next_seq_ - 1, std::memory_order_release);
    notify_cv_.SignalAll();
  }
  return absl::OkStatus();
}

// A session commit of any size: the task folds into batch_ as usual, but
// every few MB the batch is spilled into one SST file per column family
// (keys arrive in order: entities in key order, positions and seqs
// increasing; an atomic commit's log keys do not, and get a file per spill),
// and the files are ingested into all families in one atomic
// IngestExternalFiles at the end. Memory stays bounded by the spill size;
// readers see all of the commit or none of it; a crash before the ingestion
// leaves only unreferenced files (removed at the next commit or open).
absl::Status StoreImpl::SpillPut(size_t cf, rocksdb::Slice key, rocksdb::Slice value) {
  // Roll to a new file every kSpillFileBytes (a writer keeps its file's index
  // and filter in memory until Finish, so this bounds that too), and when
  // the key does not come after the file's last one.
  auto& writer = spill_->writers[cf];
  if (writer && (writer->FileSize() > kSpillFileBytes || key.compare(spill_->last_key[cf]) <= 0)) {
    CAIRN_RETURN_IF_ERROR(FromRocks(writer->Finish(), "finish spill file"));
    writer.reset();
  }
  if (!writer) {
    writer = std::make_unique<rocksdb::SstFileWriter>(rocksdb::EnvOptions(),
                                                      db_->GetOptions(cfs_[cf]), cfs_[cf]);
    spill_->files[cf].push_back(
        absl::StrCat(spill_->dir, "/", CfName(cf), "-", spill_->files[cf].size(), ".sst"));
    CAIRN_RETURN_IF_ERROR(FromRocks(writer->Open(spill_->files[cf].back()), "open spill file"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(writer->Put(key, value), "write spill file"));
  spill_->last_key[cf].assign(key.data(), key.size());
  return absl::OkStatus();
}

absl::Status StoreImpl::SpillBatch() {
  rocksdb::WriteBatch sorting;  // log entries of an atomic commit, to sort
  std::string sort_key = keys::LogSortPrefix();
  const size_t sort_prefix = sort_key.size();
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    std::unique_ptr<rocksdb::WBWIIterator> it(batch_->NewIterator(cfs_[cf]));
    for (it->SeekToFirst(); it->Valid();) {
      rocksdb::WriteEntry e = it->Entry();
      if (e.type != rocksdb::kPutRecord && e.type != rocksdb::kMergeRecord) {
        return absl::InternalError("session commit produced a delete");
      }
      // A key written more than once has its entries in write order: keep
      // the last.
      it->Next();
      if (it->Valid() && it->Entry().key == e.key) continue;
      std::string merged;
      if (e.type == rocksdb::kMergeRecord) {
        // A link: the merged record (over what the batch or the store holds).
        CAIRN_RETURN_IF_ERROR(FromRocks(
            batch_->GetFromBatchAndDB(db_.get(), rocksdb::ReadOptions(), cfs_[cf], e.key, &merged),
            "merge a link"));
        e.value = merged;
      }
      if (cf == kMeta) {
        spill_->meta[e.key.ToString()] = e.value.ToString();
      } else if (cf == kLog && spill_->sort_log) {
        sort_key.resize(sort_prefix);
        sort_key.append(e.key.data(), e.key.size());
        CAIRN_RETURN_IF_ERROR(
            FromRocks(sorting.Put(cfs_[kStaging], sort_key, e.value), "sort log"));
      } else {
        CAIRN_RETURN_IF_ERROR(SpillPut(cf, e.key, e.value));
      }
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "read batch"));
  }
  if (sorting.Count() > 0) {
    // Not logged: a crash loses them with the commit they belong to, and
    // what reached a file is dropped by the next exclusive commit or open.
    rocksdb::WriteOptions wo;
    wo.disableWAL = true;
    CAIRN_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &sorting), "sort log"));
  }
  batch_->Clear();
  return absl::OkStatus();
}

absl::Status StoreImpl::SpillSortedLog() {
  std::string lower = keys::LogSortPrefix();
  std::string upper = keys::PrefixSuccessor(lower);
  rocksdb::ReadOptions ro;
  rocksdb::Slice ub(upper);
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kStaging]));
  for (it->Seek(lower); it->Valid(); it->Next()) {
    rocksdb::Slice key = it->key();
    key.remove_prefix(lower.size());
    CAIRN_RETURN_IF_ERROR(SpillPut(kLog, key, it->value()));
  }
  return FromRocks(it->status(), "read sorted log");
}

absl::Status StoreImpl::DropLogSort() {
  std::string lower = keys::LogSortPrefix();
  {
    // Usually nothing is there: then no range tombstone is written.
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kStaging]));
    it->Seek(lower);
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "read sorted log"));
    if (!it->Valid() || !it->key().starts_with(lower)) return absl::OkStatus();
  }
  return FromRocks(db_->DeleteRange(rocksdb::WriteOptions(), cfs_[kStaging], lower,
                                    keys::PrefixSuccessor(lower)),
                   "drop sorted log");
}

absl::Status StoreImpl::CommitExclusive(Writer* w) {
  batch_->Clear();
  // Its state records would fill the cache's pending writes without bound:
  // it folds without the cache, and the cache is emptied after it.
  use_state_cache_ = false;
  absl::Cleanup back_to_cache = [this] {
    state_cache_.Clear();
    use_state_cache_ = true;
  };
  group_commit_micros_ = options_.now_micros();
  std::string dir = absl::StrCat(path_, "/spill");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  spill_ = std::make_unique<Spill>();
  spill_->dir = dir;
  spill_->writers.resize(kNumCfs);
  spill_->files.resize(kNumCfs);
  spill_->last_key.resize(kNumCfs);
  if (absl::Status s = DropLogSort(); !s.ok()) {
    w->status = s;
    spill_.reset();
    return absl::OkStatus();
  }
  BatchState bs;
  bs.next_seq = next_seq_;
  w->result = IngestResult{};
  absl::Status s = ApplyBatch(w, &bs);
  w->status = s;
  if (s.ok()) s = SpillBatch();
  if (s.ok() && spill_->sort_log) s = SpillSortedLog();
  if (s.ok()) {
    // Counters and the seq counter go in with the data, in the meta file.
    std::string last;
    keys::AppendU64(bs.next_seq - 1, &last);
    spill_->meta[std::string(kMetaLastSeq)] = last;
    for (const auto& [name, st] : bs.sources) {
      spill_->meta[keys::SourceStatsKey(name)] = EncodeSourceStats(st);
    }
    rocksdb::SstFileWriter meta(rocksdb::EnvOptions(), db_->GetOptions(cfs_[kMeta]), cfs_[kMeta]);
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
  if (s.ok()) {
    CrashPoint("exclusive.before_ingest");
    s = FromRocks(db_->IngestExternalFiles(args), "ingest session commit");
    if (s.ok()) CrashPoint("exclusive.after_ingest");
  }
  // What the sort left behind; if this fails, the next exclusive commit or
  // open drops it.
  if (spill_->sort_log) DropLogSort().IgnoreError();
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
  if (w->side_records) {
    for (const SideRecord& rec : *w->side_records) {
      CAIRN_RETURN_IF_ERROR(BatchPut(kMeta, keys::SideRecordKey(rec.name), rec.value));
    }
  }
  if (bs->next_seq > first) {
    r.first_seq = first;
    r.last_seq = bs->next_seq - 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> StoreImpl::BatchGet(Cf cf, const std::string& key) {
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

absl::Status StoreImpl::BatchMerge(Cf cf, std::string_view key, std::string_view operand) {
  rocksdb::Status s;
  if ((cf == kChanges || cf == kEntitySeq) && !spill_) {
    s = batch_->GetWriteBatch()->Merge(cfs_[cf], key, operand);  // as BatchPut
  } else {
    s = batch_->Merge(cfs_[cf], key, operand);
  }
  return FromRocks(s, absl::StrCat("merge ", CfName(cf)));
}

absl::Status StoreImpl::ApplyEvent(Prepared& p, BatchState* bs, IngestResult* result) {
  const Event& e = p.event;
  SourceStats& stats = StatsFor(bs, e.source);
  // An event is logged under its identity (source, position, collection,
  // key): by the history version it produced (format 3), or a truncate and
  // an event of a store written before format 3 by a log record. The
  // source's last_position is the newest position it ever logged (committed
  // atomically with the log), so an event past it cannot be a duplicate:
  // in-order events skip the read.
  if (e.position <= stats.last_position) {
    std::optional<Logged> logged;
    CAIRN_ASSIGN_OR_RETURN(logged, FindLogged(p));
    if (logged) {
      bool same =
          logged->op == e.op && logged->payload == e.payload && logged->snapshot == e.snapshot;
      result->outcomes.push_back(same ? Outcome::kDuplicate : Outcome::kConflict);
      (same ? result->duplicates : result->conflicts)++;
      (same ? stats.duplicates : stats.conflicts)++;
      return absl::OkStatus();
    }
  }
  if (e.op == Op::kTruncate) {
    CAIRN_RETURN_IF_ERROR(ApplyTruncate(p, bs));
    records::LogValue log;
    log.op = e.op;
    log.payload = e.payload;  // empty: Validate clears a truncate's
    log.raw = e.raw;
    log.event_id = e.event_id;
    log.snapshot = e.snapshot;
    log.seq = bs->next_seq - 1;
    log.ingest_micros = group_commit_micros_;
    CAIRN_RETURN_IF_ERROR(
        FromRocks(batch_->Put(cfs_[kLog], LogKeyOf(p), records::Encode(log)), "put log"));
  } else {
    CAIRN_RETURN_IF_ERROR(ApplyToEntity(e.collection, p.key_bytes, p.entity, {e.position, e.source},
                                        e.op, e.payload, e.snapshot, bs, /*check_markers=*/true,
                                        /*logged=*/&e));
  }
  result->outcomes.push_back(Outcome::kApplied);
  result->applied++;
  stats.accepted++;
  stats.last_position = std::max(stats.last_position, e.position);
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StoreImpl::Logged>> StoreImpl::FindLogged(const Prepared& p) {
  const Event& e = p.event;
  if (e.op != Op::kTruncate) {
    std::optional<std::string> v;
    CAIRN_ASSIGN_OR_RETURN(v, BatchGet(kHistory, keys::HistoryKey(p.entity, e.position, e.source)));
    if (v) {
      CAIRN_ASSIGN_OR_RETURN(records::VersionValue version, records::DecodeVersion(*v));
      if (version.logged) {
        return Logged{version.op, std::string(records::LoggedPayload(version)), version.snapshot};
      }
    }
  }
  // A truncate, or an event that a store written before format 3 logged.
  std::optional<std::string> existing;
  CAIRN_ASSIGN_OR_RETURN(existing, BatchGet(kLog, LogKeyOf(p)));
  if (!existing) return std::nullopt;
  CAIRN_ASSIGN_OR_RETURN(records::LogValue log, records::DecodeLog(*existing));
  return Logged{log.op, std::move(log.payload), log.snapshot};
}

absl::Status StoreImpl::ApplyTruncate(const Prepared& p, BatchState* bs) {
  const Event& e = p.event;
  Marker m{{e.position, e.source}};
  CAIRN_RETURN_IF_ERROR(FromRocks(
      batch_->Put(cfs_[kMeta], keys::TruncateMarkerKey(e.collection, e.position, e.source), ""),
      "put marker"));
  bs->markers.emplace_back(e.collection, m);
  if (bs->truncates_in_walk) return absl::OkStatus();

  // Every entity the collection has ever had gets a truncate version at the
  // marker; entities first seen later get theirs in EnforceMarkers.
  std::string lower = keys::CollectionPrefix(e.collection);
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
    CAIRN_RETURN_IF_ERROR(ApplyToEntity(e.collection, key_bytes, entity, m.at, Op::kTruncate, "",
                                        false, bs,
                                        /*check_markers=*/false));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::EnforceMarkers(std::string_view collection, std::string_view key_bytes,
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
    CAIRN_RETURN_IF_ERROR(
        ApplyToEntity(collection, key_bytes, entity, m.at, Op::kTruncate, "", false, bs, false));
  }
  return absl::OkStatus();
}

void StoreImpl::CountRejectedBatch(std::string_view source) {
  absl::MutexLock l(&stats_mu_);
  published_sources_[std::string(source)].rejected_batches++;
}

}  // namespace cairn::internal
