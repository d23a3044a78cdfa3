// Open, recovery of the leader's counters, close.
#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "cairn/version.h"
#include "crash_point.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "store_impl.h"

namespace cairn::internal {
namespace {

// Memtable insert hints. A memtable is a skip list, and an insert searches
// it from the top: ~40% of ingest's instructions went to those searches and
// their key comparisons. With a hint prefix, RocksDB remembers per prefix
// where its last insert landed and starts the next one there; cairn's
// inserts land next to the previous one of the same prefix (an entity's new
// state, its next version or entry; the next seq of the change feed), so
// most searches become a few comparisons. Only the memtable uses this: no
// read, filter or file depends on it.
class HintPrefix : public rocksdb::SliceTransform {
 public:
  enum Kind { kWholeKey, kEntity, kEntityBeforeSeq, kNothing };
  explicit HintPrefix(Kind kind) : kind_(kind) {}
  const char* Name() const override {
    static const char* kNames[] = {"cairn.HintWholeKey", "cairn.HintEntity",
                                   "cairn.HintEntityBeforeSeq", "cairn.HintNothing"};
    return kNames[kind_];
  }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), Length(key));
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return kind_ != kEntity || Length(key) > 0;
  }

 private:
  size_t Length(const rocksdb::Slice& key) const {
    switch (kind_) {
      case kWholeKey:
        return key.size();
      case kEntity:
        return keys::EntityPrefixLength(key.ToStringView());
      case kEntityBeforeSeq:
        return key.size() >= 8 ? key.size() - 8 : key.size();
      default:
        return 0;
    }
  }
  Kind kind_;
};

// The hint prefix of a family's keys (key_codec.h), or null.
std::shared_ptr<const rocksdb::SliceTransform> HintPrefixOf(Cf cf) {
  switch (cf) {
    case kState:
      return std::make_shared<HintPrefix>(HintPrefix::kWholeKey);
    case kHistory:
      return std::make_shared<HintPrefix>(HintPrefix::kEntity);
    case kEntitySeq:
      return std::make_shared<HintPrefix>(HintPrefix::kEntityBeforeSeq);
    case kChanges:
      return std::make_shared<HintPrefix>(HintPrefix::kNothing);
    default:
      return nullptr;
  }
}

}  // namespace

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
  uint64_t* fields[] = {&s.accepted,
                        &s.duplicates,
                        &s.conflicts,
                        &s.rejected_batches,
                        &s.last_position.timestamp,
                        &s.last_position.tick};
  for (uint64_t* f : fields) {
    if (!keys::ConsumeU64(&in, f)) break;
  }
  return s;
}

absl::Status StoreImpl::Init() {
  rocksdb::Options opts;
  opts.create_if_missing = options_.create_if_missing;
  opts.create_missing_column_families = true;
  if (options_.env != nullptr) opts.env = options_.env;
  bg_errors_ = std::make_shared<BackgroundErrors>([this] {
    absl::MutexLock l(&retention_mu_);
    retention_cv_.SignalAll();
  });
  opts.listeners.push_back(bg_errors_);
  opts.IncreaseParallelism(2);
  // Tickers only (block cache hits and misses for Stats): no histograms or
  // timers on the read and write paths.
  rocks_stats_ = rocksdb::CreateDBStatistics();
  rocks_stats_->set_stats_level(rocksdb::StatsLevel::kExceptHistogramOrTimers);
  opts.statistics = rocks_stats_;
  const size_t budget = options_.memory_budget;
  if (budget > 0 && budget < (16u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory budget ", budget, " bytes is below the minimum of 16 MiB"));
  }
  if (budget > 0 && options_.reserved_bytes > budget / 2) {
    return absl::InvalidArgumentError(absl::StrCat("reserved bytes ", options_.reserved_bytes,
                                                   " exceed half of the memory budget ", budget,
                                                   " bytes"));
  }
  if (budget > 0) {
    // One budget (config.h RecentBytes): the ring's share and the program's
    // (reserved_bytes) off the top, the rest one block cache, to which the memtables (at most half
    // the budget, config.h HotWriteBuffer) are charged. The WAL is flushed away past one budget.
    block_cache_ = rocksdb::NewLRUCache(budget - RecentBytes(budget) - options_.reserved_bytes);
    write_buffers_ = std::make_shared<rocksdb::WriteBufferManager>(budget / 2, block_cache_);
    opts.write_buffer_manager = write_buffers_;
    opts.max_total_wal_size = budget;
  } else {
    block_cache_ = rocksdb::NewLRUCache(options_.block_cache_bytes);
  }
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = block_cache_;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  // Index and filter blocks live in the (bounded) block cache instead of on
  // the heap per open file, so memory does not grow with the store. Without
  // a budget L0's are pinned because every read touches them; under one they
  // stay evictable, since a slow disk lets L0 files pile up and pinned blocks
  // would outgrow the cache.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = budget == 0;
  if (budget > 0) {
    // Under a budget the cache is small beside a large store: a file's
    // whole index or filter block (hundreds of KB for a 64 MB file) would be
    // evicted by data blocks and read and decompressed again for nearly every
    // point read -- 10M upserts under 256 MiB slowed to 1,000 events/s once the
    // state family passed a GB. Partitioned, a read touches one small index
    // and one filter partition, cached like data (with high priority), and
    // only the small top levels stay pinned.
    table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
    table.partition_filters = true;
    table.metadata_block_size = 4096;
    table.pin_top_level_index_and_filter = true;
    table.cache_index_and_filter_blocks_with_high_priority = true;
  }
  // Every block read from disk is checksummed: XXH3 is several times faster
  // than CRC32C without SSE4.2, which the packaged RocksDB is built without.
  table.checksum = rocksdb::kXXH3;
  auto table_factory =
      std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    rocksdb::ColumnFamilyOptions cfo(opts);
    cfo.table_factory = table_factory;
    // LZ4 decompresses about twice as fast as the default Snappy at a
    // similar ratio on JSON documents: a snapshot of past positions
    // decompresses one history block per entity.
    cfo.compression = rocksdb::kLZ4Compression;
    if (budget > 0) {
      cfo.write_buffer_size = IsColdCf(cf) ? ColdWriteBuffer(budget) : HotWriteBuffer(budget);
      cfo.max_write_buffer_number = kWriteBuffers;
    }
    cfo.memtable_insert_with_hint_prefix_extractor = HintPrefixOf(static_cast<Cf>(cf));
    if (cf == kHistory || cf == kEntitySeq) {
      cfo.compaction_filter_factory = NewRetentionFilterFactory(static_cast<Cf>(cf), &horizon_);
      cfo.merge_operator = NewLinkMergeOperator(static_cast<Cf>(cf));
    } else if (cf != kMeta) {
      filters_.push_back(NewRetentionFilter(static_cast<Cf>(cf), &horizon_));
      cfo.compaction_filter = filters_.back().get();
    }
    descriptors.emplace_back(CfName(cf), cfo);
  }
  // A store of format 4 or before has history and entity_seq oldest first
  // in families of their own: opened (every family must be) for the upgrade
  // to rewrite, with their links' merge operator and no retention.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(opts), path_, &existing).ok()) {
    for (const char* legacy : {kLegacyHistory, kLegacyEntitySeq}) {
      if (std::find(existing.begin(), existing.end(), legacy) == existing.end()) continue;
      rocksdb::ColumnFamilyOptions cfo(opts);
      cfo.table_factory = table_factory;
      cfo.compression = rocksdb::kLZ4Compression;
      cfo.merge_operator = MergeOperatorOf(legacy);
      descriptors.emplace_back(legacy, cfo);
    }
  }
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  // R4: a write-ahead log cut by a torn or corrupt record is recovered up to
  // the last whole commit before it (point-in-time recovery), and reported:
  // a first open insists on the whole log, and only when it finds corruption
  // does the store open again, keeping the prefix, and say so in Stats.
  rocksdb::DBOptions db_options(opts);
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kAbsoluteConsistency;
  rocksdb::Status opened = rocksdb::DB::Open(db_options, path_, descriptors, &handles, &raw);
  if (opened.IsCorruption()) {
    std::string why = opened.ToString();
    db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    opened = rocksdb::DB::Open(db_options, path_, descriptors, &handles, &raw);
    if (opened.ok()) {
      recovery_ = absl::StrCat(
          "the write-ahead log ends in a torn or corrupt record (", why,
          "); recovered every commit before it, a consistent prefix; the commits the log held "
          "after it are not in the store");
    }
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(opened, absl::StrCat("open ", path_)));
  db_.reset(raw);
  legacy_cfs_.assign(handles.begin() + kNumCfs, handles.end());
  handles.resize(kNumCfs);
  cfs_ = std::move(handles);
  // Without overwrite_key a Put only inserts into the batch index (no search
  // for an older entry of the key): reads still see a key's newest entry, and
  // the index iterator yields every entry (SpillBatch keeps the newest).
  batch_ = std::make_unique<rocksdb::WriteBatchWithIndex>(rocksdb::BytewiseComparator(), 0,
                                                          /*overwrite_key=*/false);
  CAIRN_RETURN_IF_ERROR(CheckFormatVersion());
  CAIRN_RETURN_IF_ERROR(DropLegacyFamilies());
  CAIRN_RETURN_IF_ERROR(LoadMeta());
  if (!recovery_.empty()) absl::StrAppend(&recovery_, " (last seq ", LastSeq(), ")");
  CAIRN_RETURN_IF_ERROR(CleanClosedSessions());
  CAIRN_RETURN_IF_ERROR(DropLogSort());  // an atomic commit cut short
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
    for (auto* h : legacy_cfs_) db_->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    db_->Close().PermitUncheckedError();
  }
}

absl::Status StoreImpl::CheckFormatVersion() {
  rocksdb::ReadOptions ro;
  std::string v;
  rocksdb::Status s = db_->Get(ro, cfs_[kMeta], kMetaFormatVersion, &v);
  // The versions are recorded in one synced write with the format version
  // (a crash before it leaves the store as it was; the next open records
  // them again).
  rocksdb::WriteBatch wb;
  bool created = false;  // a new store: this cairn creates it
  auto record_format = [&] {
    std::string version;
    keys::AppendU64(kFormatVersion, &version);
    return FromRocks(wb.Put(cfs_[kMeta], kMetaFormatVersion, version), "record the format version");
  };
  if (s.IsNotFound()) {
    // A new store, or one written before stores recorded their version
    // (version 1): record this one's.
    std::string last;
    rocksdb::Status l = db_->Get(ro, cfs_[kMeta], kMetaLastSeq, &last);
    CAIRN_RETURN_IF_ERROR(record_format());
    created = l.IsNotFound();
    if (created) {
      CAIRN_RETURN_IF_ERROR(
          FromRocks(wb.Put(cfs_[kMeta], kMetaCreatedBy, kVersion), "record the cairn version"));
    }
  } else {
    CAIRN_RETURN_IF_ERROR(FromRocks(s, "read the format version"));
    std::string_view in = v;
    uint64_t version = 0;
    if (!keys::ConsumeU64(&in, &version) || !in.empty()) {
      return absl::DataLossError(
          absl::StrCat("store at ", path_, ": malformed format version (", v.size(), " bytes)"));
    }
    // Every record of an older readable version reads as it is, once the
    // oldest-first families are rewritten newest first: then the upgrade is
    // the version key itself (a crash before it leaves the old version, and
    // the next open resumes the rewrite and records it).
    if (version >= kOldestReadableFormat && version < kFormatVersion) {
      CAIRN_RETURN_IF_ERROR(MigrateNewestFirst());
      CrashPoint("upgrade.before_record");
      CAIRN_RETURN_IF_ERROR(record_format());
      for (const char* legacy : {kLegacyHistory, kLegacyEntitySeq}) {
        CAIRN_RETURN_IF_ERROR(
            FromRocks(wb.Delete(cfs_[kMeta], std::string(kMetaUpgradePrefix) + legacy),
                      "record the upgrade"));
      }
    } else if (version != kFormatVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("store at ", path_, " has on-disk format version ", version,
                       "; this cairn reads version ", kFormatVersion, " (cairn ", kVersion,
                       version > kFormatVersion ? "; it was written by a newer cairn: use that one)"
                                                : "; no upgrade from that version exists)"));
    }
  }
  for (auto [key, out] : {std::pair{kMetaCreatedBy, &created_by_},
                          std::pair{kMetaOpenedBy, &previously_opened_by_}}) {
    rocksdb::Status g = db_->Get(ro, cfs_[kMeta], key, out);
    if (g.IsNotFound())
      out->clear();
    else
      CAIRN_RETURN_IF_ERROR(FromRocks(g, "read the cairn version"));
  }
  if (previously_opened_by_ != kVersion) {
    CAIRN_RETURN_IF_ERROR(
        FromRocks(wb.Put(cfs_[kMeta], kMetaOpenedBy, kVersion), "record the cairn version"));
  }
  if (wb.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions wo;
  wo.sync = true;
  CAIRN_RETURN_IF_ERROR(FromRocks(db_->Write(wo, &wb), "record the format version"));
  if (created) created_by_ = kVersion;
  return absl::OkStatus();
}

absl::Status StoreImpl::MigrateNewestFirst() {
  for (rocksdb::ColumnFamilyHandle* from : legacy_cfs_) {
    const std::string& name = from->GetName();
    const auto family = name == kLegacyHistory ? keys::NewestFirstFamily::kHistory
                                               : keys::NewestFirstFamily::kEntitySeq;
    rocksdb::ColumnFamilyHandle* to =
        cfs_[family == keys::NewestFirstFamily::kHistory ? kHistory : kEntitySeq];
    const std::string progress_key = std::string(kMetaUpgradePrefix) + name;
    std::string done;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], progress_key, &done);
    if (!s.IsNotFound()) CAIRN_RETURN_IF_ERROR(FromRocks(s, "read the upgrade's progress"));
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), from));
    if (s.ok()) {
      it->Seek(done);
      if (it->Valid() && it->key() == rocksdb::Slice(done)) it->Next();
    } else {
      it->SeekToFirst();
    }
    rocksdb::WriteBatch wb;
    size_t records = 0;
    // The chunk so far, with its progress key (the last key it copied).
    auto write = [&](std::string_view last) {
      CAIRN_RETURN_IF_ERROR(
          FromRocks(wb.Put(cfs_[kMeta], progress_key, last), "record the upgrade's progress"));
      CAIRN_RETURN_IF_ERROR(FromRocks(db_->Write(rocksdb::WriteOptions(), &wb), "upgrade"));
      CrashPoint("upgrade.chunk");
      wb.Clear();
      records = 0;
      return absl::OkStatus();
    };
    std::string last;
    for (; it->Valid(); it->Next()) {
      std::string key = keys::NewestFirstKey(family, it->key().ToStringView());
      if (key.empty()) {
        return absl::DataLossError(absl::StrCat("store at ", path_, ": malformed key in ", name,
                                                " (", it->key().size(), " bytes)"));
      }
      CAIRN_RETURN_IF_ERROR(FromRocks(wb.Put(to, key, it->value()), "upgrade"));
      last = it->key().ToString();
      if (++records == kUpgradeChunkRecords) CAIRN_RETURN_IF_ERROR(write(last));
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), absl::StrCat("read ", name)));
    if (records > 0) CAIRN_RETURN_IF_ERROR(write(last));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::DropLegacyFamilies() {
  while (!legacy_cfs_.empty()) {
    rocksdb::ColumnFamilyHandle* h = legacy_cfs_.back();
    const std::string what = "drop " + h->GetName();
    CAIRN_RETURN_IF_ERROR(FromRocks(db_->DropColumnFamily(h), what));
    // Gone from the list before it is destroyed: the destructor destroys
    // what is left in it.
    legacy_cfs_.pop_back();
    CAIRN_RETURN_IF_ERROR(FromRocks(db_->DestroyColumnFamilyHandle(h), what));
  }
  return absl::OkStatus();
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
    std::string name(keys::MetaName(it->key().ToStringView(), kMetaSourcePrefix));
    sources_[name] = DecodeSourceStats(it->value().ToStringView());
  }
  for (it->Seek(kMetaTruncatePrefix); it->Valid() && it->key().starts_with(kMetaTruncatePrefix);
       it->Next()) {
    std::string collection;
    Marker m;
    if (!keys::ParseTruncateMarkerKey(it->key().ToStringView(), &collection, &m.at.position,
                                      &m.at.source)) {
      return absl::DataLossError("malformed truncate marker");
    }
    markers_[collection].insert(m);
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "read meta"));
  absl::MutexLock l(&stats_mu_);
  published_sources_ = sources_;
  return absl::OkStatus();
}

}  // namespace cairn::internal

namespace cairn {

using internal::StoreImpl;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(std::string_view path, const Options& options) {
  const std::string dir = internal::DirPath(path);
  if (std::error_code ec;
      std::filesystem::exists(absl::StrCat(dir, internal::kRestoringSuffix), ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("a restore into ", dir, " was cut short (", dir, internal::kRestoringSuffix,
                     " is left): restore again, or remove ", dir, internal::kRestoringSuffix,
                     " to open ", dir, " as it is"));
  }
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
