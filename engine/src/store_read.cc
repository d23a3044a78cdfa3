// Reads: Get, snapshots, History, the change feed and Subscribe, Stats.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "cairn/version.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "snapshot_cursor.h"
#include "store_impl.h"
#include "subscription.h"

namespace cairn::internal {

using records::Doc;

absl::StatusOr<Entity> StoreImpl::Get(std::string_view collection, std::string_view key) {
  auto kb = keys::EncodeKey(key);
  if (!kb.ok()) return absl::InvalidArgumentError(kb.status().message());
  std::string entity = keys::EntityPrefix(collection, *kb);
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kState], entity, &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("no entity ", AbslView(Excerpt(key)), " in ", AbslView(Excerpt(collection))));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get"));
  CAIRN_ASSIGN_OR_RETURN(records::StateValue st, records::DecodeState(v));
  if (!st.doc) {
    return absl::NotFoundError(absl::StrCat("entity ", AbslView(Excerpt(key)), " in ",
                                            AbslView(Excerpt(collection)), " was deleted at seq ",
                                            st.seq));
  }
  CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(*kb));
  return MakeEntity(std::string(collection), std::move(key_json), st.doc, st.complete, st.position,
                    st.source, st.seq);
}

absl::StatusOr<std::unique_ptr<SnapshotCursor>> StoreImpl::NewSnapshot(const SnapshotOptions& o) {
  if (o.as_of_seq && o.as_of_position) {
    return absl::InvalidArgumentError("as_of_seq and as_of_position are exclusive");
  }
  CAIRN_ASSIGN_OR_RETURN(ScanRange range, SnapshotRange(o));
  uint64_t last = LastSeq();
  const rocksdb::Snapshot* snap = db_->GetSnapshot();
  auto mode = SnapshotMode::kCurrent;
  Cf cf = kState;
  uint64_t seq = last;
  Position pos;
  if (o.as_of_seq) {
    uint64_t oldest = horizon_.oldest_seq.load();
    if (*o.as_of_seq < oldest || *o.as_of_seq > last) {
      db_->ReleaseSnapshot(snap);
      return absl::OutOfRangeError(absl::StrCat(
          "seq ", *o.as_of_seq, " is outside the available range: oldest available seq is ", oldest,
          ", last committed seq is ", last));
    }
    mode = SnapshotMode::kAsOfSeq;
    cf = kEntitySeq;
    seq = *o.as_of_seq;
  } else if (o.as_of_position) {
    uint64_t oldest = horizon_.oldest_timestamp.load();
    if (o.as_of_position->timestamp < oldest) {
      db_->ReleaseSnapshot(snap);
      return OlderThanRetention(absl::StrCat("position timestamp ", o.as_of_position->timestamp),
                                RetentionAxis::kTimestamp, oldest);
    }
    if (*o.as_of_position == Position{UINT64_MAX, UINT64_MAX}) {
      db_->ReleaseSnapshot(snap);
      return absl::InvalidArgumentError("position overflow");
    }
    mode = SnapshotMode::kAsOfPosition;
    cf = kHistory;
    pos = *o.as_of_position;
  }
  return NewSnapshotCursor(db_.get(), cfs_[kState], cfs_[cf], cfs_[kChanges], snap, mode,
                           std::move(range), seq, pos, o.include_incomplete,
                           /*bulk=*/o.key_prefix.empty());
}

absl::StatusOr<std::vector<Version>> StoreImpl::History(std::string_view collection,
                                                        std::string_view key,
                                                        const HistoryOptions& o) {
  auto kb = keys::EncodeKey(key);
  if (!kb.ok()) return absl::InvalidArgumentError(kb.status().message());
  if (o.from_seq && o.to_seq && *o.from_seq > *o.to_seq) {
    return absl::InvalidArgumentError(
        absl::StrCat("from_seq ", *o.from_seq, " is after to_seq ", *o.to_seq));
  }
  if (o.from_position && o.to_position && *o.from_position > *o.to_position) {
    return absl::InvalidArgumentError("from_position is after to_position");
  }
  uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  uint64_t oldest_seq = horizon_.oldest_seq.load();
  if (o.from_position && o.from_position->timestamp < oldest_ts) {
    return OlderThanRetention(absl::StrCat("from_position timestamp ", o.from_position->timestamp),
                              RetentionAxis::kTimestamp, oldest_ts);
  }
  if (o.from_seq && *o.from_seq < oldest_seq) {
    return OlderThanRetention(absl::StrCat("from_seq ", *o.from_seq), RetentionAxis::kSeq,
                              oldest_seq);
  }
  std::string entity = keys::EntityPrefix(collection, *kb);
  std::string upper = keys::PrefixSuccessor(entity);
  rocksdb::ReadOptions ro;
  rocksdb::Slice lb(entity), ub(upper);
  ro.iterate_lower_bound = &lb;
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cfs_[kHistory]));
  // Versions are keyed newest first: read forward (faster than backward in
  // RocksDB) from `to_position`, down to the first version before
  // `from_position` (it seeds the first one's `before`), then walk them in
  // position order.
  struct Read {
    Position position;
    std::string source;
    records::VersionValue version;
  };
  std::vector<Read> newest_first;
  it->Seek(o.to_position ? keys::HistoryPositionPrefix(entity, *o.to_position) : entity);
  for (; it->Valid(); it->Next()) {
    Read r;
    if (!keys::ParseHistorySuffix(it->key().ToStringView().substr(entity.size()), &r.position,
                                  &r.source)) {
      return absl::DataLossError("malformed history key");
    }
    CAIRN_ASSIGN_OR_RETURN(r.version, records::DecodeVersion(it->value().ToStringView()));
    bool seed = o.from_position && r.position < *o.from_position;
    newest_first.push_back(std::move(r));
    if (seed) break;
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "history scan"));
  Doc prev;
  std::vector<Version> out;
  for (auto r = newest_first.rbegin(); r != newest_first.rend(); ++r) {
    Version ver;
    ver.position = r->position;
    ver.source = std::move(r->source);
    records::VersionValue& v = r->version;
    if (o.from_position && ver.position < *o.from_position) {
      prev = std::move(v.after);  // the seed
      continue;
    }
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
  if (o.reverse) {
    std::reverse(out.begin(), out.end());
    if (o.limit && out.size() > o.limit) out.resize(o.limit);
  }
  return out;
}

absl::Status StoreImpl::ReadChanges(uint64_t after_seq, size_t max, std::vector<Change>* out,
                                    uint64_t* last_read) {
  uint64_t last = LastSeq();
  // From the recent-changes ring when it holds the next seq.
  if (size_t n = recent_.Read(after_seq, last, max, out, last_read); n > 0) {
    // Done, or the ring ends before `last`: the store has the rest.
    if (n >= max || *last_read == last) return absl::OkStatus();
    max -= n;
    after_seq = *last_read;
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

absl::StatusOr<std::unique_ptr<Subscription>> StoreImpl::Subscribe(const SubscribeOptions& o) {
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
        return absl::OutOfRangeError(
            absl::StrCat("from_seq ", o.from_seq, " is after the last committed seq ", last));
      }
      if (o.from_seq + 1 < oldest) {
        return OlderThanRetention(absl::StrCat("from_seq ", o.from_seq), RetentionAxis::kSeq,
                                  oldest);
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
  return NewStoreSubscription(this, o, std::move(key_bytes), std::move(prefix_bytes),
                              std::move(snapshot), start);
}

StoreStats StoreImpl::Stats() {
  StoreStats s;
  s.last_seq = LastSeq();
  s.oldest_seq = horizon_.oldest_seq.load();
  s.oldest_position = {horizon_.oldest_timestamp.load(), 0};
  s.commits = commits_.load(std::memory_order_relaxed);
  s.records_written = records_written_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.recovery = recovery_;
  s.versions = {.cairn = kVersion,
                .format = kFormatVersion,
                .created_by = created_by_,
                .previously_opened_by = previously_opened_by_};
  StoreStats::Resources& r = s.resources;
  r.memory_budget = options_.memory_budget;
  r.block_cache_capacity = block_cache_->GetCapacity();
  r.block_cache_usage = block_cache_->GetUsage();
  r.block_cache_hits = rocks_stats_->getTickerCount(rocksdb::BLOCK_CACHE_HIT);
  r.block_cache_misses = rocks_stats_->getTickerCount(rocksdb::BLOCK_CACHE_MISS);
  s.latency = {.ingest = ingest_latency_.Read(),
               .commit = commit_latency_.Read(),
               .commit_sync = commit_sync_latency_.Read()};
  r.recent_changes = recent_.bytes();
  if (options_.memory_budget) r.reserved = options_.reserved_bytes;
  uint64_t v = 0;
  for (auto* cf : cfs_) {
    if (db_->GetIntProperty(cf, rocksdb::DB::Properties::kSizeAllMemTables, &v)) r.memtables += v;
    if (db_->GetIntProperty(cf, rocksdb::DB::Properties::kLiveSstFilesSize, &v)) r.sst_bytes += v;
    if (db_->GetIntProperty(cf, rocksdb::DB::Properties::kEstimatePendingCompactionBytes, &v)) {
      r.pending_compaction_bytes += v;
    }
  }
  rocksdb::VectorLogPtr wals;
  if (db_->GetSortedWalFiles(wals).ok()) {
    for (const auto& w : wals) {
      if (w->Type() != rocksdb::kAliveLogFile) continue;
      r.wal_files++;
      r.wal_bytes += w->SizeFileBytes();
    }
  }
  absl::MutexLock l(&stats_mu_);
  s.sources = published_sources_;
  s.backups = backup_stats_;
  return s;
}

}  // namespace cairn::internal
