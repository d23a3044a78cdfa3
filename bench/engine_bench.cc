// Engine benchmarks (issue 2): ingest in order and with late events, against
// a raw-RocksDB baseline measured in the same run; snapshot as of a past
// position with 1, 10 and 100 versions per entity; key canonicalization and
// merge-patch apply per event.
//
// Workload (shared by every ingest benchmark). One source ("billing"), one
// collection ("account"), 100,000 entities with integer keys. Each run starts
// from a copy of a template store that already holds one upsert per entity,
// so every timed event updates an existing entity: 80% of events go to 1,000
// hot entities (spread over the key range), 20% to any of the 100,000. Three
// events in four are full upserts of a ~215-byte JSON document, one in four a
// ~60-byte merge patch of two of its fields. Positions increase by one per
// event. Events are generated outside the timed region.
//
// Late events: a chosen fraction of events is delayed by 1..1000 positions in
// arrival order. Whether such an event is really late *for its entity*
// (older than the entity's newest applied version) depends on the mix; the
// `late_for_entity` counter reports the fraction that is.
//
// Ratios on a shared machine: run the ingest benchmarks with
// --benchmark_filter=Ingest --benchmark_enable_random_interleaving=true so
// load drift spreads over cairn and the baseline alike. (Not the snapshot
// benchmarks: they keep one store per shape and would rebuild it each time.)
// CAIRN_BENCH_LARGE=1 adds the 100-version snapshot over 100,000 entities.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "bench_env.h"
#include "cairn/store.h"
#include "json_doc.h"
#include "key_codec.h"
#include "records.h"
#include "retention.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"

namespace {

using cairn::Event;
using cairn::Op;
using cairn::Position;
namespace json = cairn::json;
namespace keys = cairn::keys;
namespace records = cairn::records;

constexpr uint64_t kEntities = 100'000;
constexpr uint64_t kHotEntities = 1'000;
constexpr uint64_t kBaseTimestamp = 1'700'000'000'000'000;  // µs, Nov 2023
const std::string kSource = "billing";
const std::string kCollection = "account";

// A directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    std::string tmpl = "/tmp/cairn-engine-bench-" + tag + "-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::cerr << "mkdtemp failed for " << tmpl << "\n";
      abort();
    }
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Copies a template database into `dir` (which exists and is empty).
void CopyDb(const std::string& from, const std::string& dir) {
  std::filesystem::copy(
      from, dir,
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
}

uint64_t Mix(uint64_t x) {  // splitmix64: deterministic pseudo-randomness
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Position PositionOf(uint64_t index) { return {kBaseTimestamp + index, index}; }

// The fields of an account document that change from event to event.
struct Fields {
  uint64_t balance_cents = 0;
  uint64_t updated_micros = 0;
  uint32_t plan = 0;
};

std::string UpdatedAt(uint64_t micros) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ",
                          absl::FromUnixMicros(static_cast<int64_t>(micros)), absl::UTCTimeZone());
}

// ~215 bytes of compact JSON: what a CDC feed of a billing table carries.
std::string DocJson(uint64_t k, const Fields& f) {
  static const char* kPlans[] = {"basic", "silver", "gold"};
  char buf[512];
  snprintf(buf, sizeof buf,
           R"({"acct_no":%llu,"name":"Customer %08llu","email":"customer.%08llu@example.com",)"
           R"("plan":"%s","status":"active","balance":%llu.%02llu,"currency":"EUR",)"
           R"("region":"eu-west-1","updated_at":"%s"})",
           static_cast<unsigned long long>(k), static_cast<unsigned long long>(k),
           static_cast<unsigned long long>(k), kPlans[f.plan % 3],
           static_cast<unsigned long long>(f.balance_cents / 100),
           static_cast<unsigned long long>(f.balance_cents % 100),
           UpdatedAt(f.updated_micros).c_str());
  return buf;
}

// ~60 bytes: the two fields a balance update touches.
std::string PatchJson(const Fields& f) {
  char buf[128];
  snprintf(buf, sizeof buf, R"({"balance":%llu.%02llu,"updated_at":"%s"})",
           static_cast<unsigned long long>(f.balance_cents / 100),
           static_cast<unsigned long long>(f.balance_cents % 100),
           UpdatedAt(f.updated_micros).c_str());
  return buf;
}

// Column families, in the order cairn registers them (engine/src/config.h).
enum RawCf : uint8_t { kMeta, kLog, kState, kHistory, kEntitySeq, kChanges, kStaging, kNumCfs };
constexpr const char* kCfNames[kNumCfs] = {"default",         "log",     "state",  "history.desc",
                                           "entity_seq.desc", "changes", "staging"};

// One key-value put of the raw baseline.
struct RawPut {
  RawCf cf;
  std::string key;
  std::string value;
  bool merge = false;  // a retention link (a merge operand), not a put
};

// What the baseline writes per event. For an in-order update of an existing
// entity cairn commits (store_write.cc ApplyEvent, materializer.cc ApplyToEntity), with average
// key + value sizes on this workload:
//   history     1 put   43 + ~330 B  the new version, which logs the event
//                                    (its payload is the version's document
//                                    or patch: format 3 writes no log
//                                    record)
//   state       1 put   18 + ~330 B  with the last change's position
//   changes     1 put    8 + ~404 B  the after-image, and the before-image
//                                    as an LZ4 delta against it (format 4)
//   entity_seq  1 put   26 + ~60 B   the new entry (no document: the state's
//                                    while current, then the superseding
//                                    change's before-image)
// i.e. 4 puts per event, plus 2 small puts per batch in the default family
// (last_seq, source counters). History and entity_seq are keyed newest first
// (format 5), so neither predecessor gets a link; formats 2-4 merged one
// into each (43 + 8 and 26 + 8 B), and format 1 rewrote both whole (7 puts,
// ~2.64 KB).
// The baseline's values are not approximations: the generator models each
// entity and encodes every record with records::Encode outside the timed
// region, so sizes and compressibility are cairn's own. The timed region only
// fills a rocksdb::WriteBatch and writes it: no validation, no reads, no JSON,
// no index. (cairn also reads the entity's state per event, plus the log
// entry when the event is not past its source's newest position; the two
// links need no read.)
//
// Generates the event stream: in position order, with a model of each
// entity (enough to produce the baseline's records), then reordered by
// arrival when some events are late.
class Workload {
 public:
  Workload() : entities_(kEntities) {
    for (uint64_t k = 0; k < kEntities; ++k) {
      auto kb = keys::EncodeKey(std::to_string(k));
      if (!kb.ok()) abort();
      entities_[k].key_bytes = *kb;
      entities_[k].prefix = keys::EntityPrefix(kCollection, *kb);
    }
  }

  // Events arrive late with probability late_permille/1000, by 1..1000.
  void set_late_permille(uint64_t permille) { late_permille_ = permille; }
  // Produce the baseline's puts along with the events.
  void set_raw(bool raw) { raw_ = raw; }

  // The next event in arrival order. `puts` (if raw) receives its records.
  Event Next(std::vector<RawPut>* puts) {
    // Position indexes >= next_index_ arrive at or after next_index_, so the
    // earliest pending arrival is final once it is before next_index_.
    while (pending_.empty() || pending_.front().arrival >= next_index_) {
      uint64_t i = next_index_++;
      uint64_t arrival = i;
      if (i >= kEntities && late_permille_ > 0 && Mix(i ^ 0x1a7e) % 1000 < late_permille_) {
        arrival += 1 + Mix(i ^ 0xde1a) % 1000;
      }
      Pending p{.arrival = arrival, .index = i};
      p.event = Generate(i, &p.entity, raw_ ? &p.puts : nullptr);
      pending_.push_back(std::move(p));
      std::push_heap(pending_.begin(), pending_.end(), std::greater<>());
    }
    std::pop_heap(pending_.begin(), pending_.end(), std::greater<>());
    Pending top = std::move(pending_.back());
    pending_.pop_back();
    Entity& e = entities_[top.entity];
    if (top.index < e.newest_arrived) late_for_entity_++;
    e.newest_arrived = std::max(e.newest_arrived, top.index);
    emitted_++;
    if (puts) {
      for (RawPut& p : top.puts) puts->push_back(std::move(p));
    }
    return std::move(top.event);
  }

  uint64_t emitted() const { return emitted_; }
  uint64_t late_for_entity() const { return late_for_entity_; }
  void ResetCounters() { emitted_ = late_for_entity_ = 0; }

  // Batch-level puts cairn adds to every commit (default family).
  void AppendBatchPuts(std::vector<RawPut>* puts) const {
    std::string last;
    keys::AppendU64(seq_, &last);
    puts->push_back({kMeta, "last_seq", last});
    puts->push_back({kMeta, "source/" + kSource, std::string(48, '\x01')});
  }

 private:
  struct Entity {
    std::string key_bytes;
    std::string prefix;
    Fields fields;
    bool seen = false;
    Op last_op = Op::kUpsert;
    uint64_t last_index = 0;
    uint64_t last_seq = 0;
    uint64_t versions = 0;
    uint64_t newest_arrived = 0;
  };
  struct Pending {
    uint64_t arrival = 0;
    uint64_t index = 0;
    uint64_t entity = 0;
    Event event;
    std::vector<RawPut> puts;
    bool operator>(const Pending& o) const {
      return std::pair(arrival, index) > std::pair(o.arrival, o.index);
    }
  };

  static uint64_t EntityOf(uint64_t i) {
    if (i < kEntities) return i;  // the preload: one upsert per entity
    uint64_t h = Mix(i);
    if (h % 10 < 8) return ((h >> 8) % kHotEntities) * (kEntities / kHotEntities);
    return (h >> 8) % kEntities;
  }

  // The event at position index `i`, applied to the model.
  Event Generate(uint64_t i, uint64_t* entity, std::vector<RawPut>* puts) {
    uint64_t k = EntityOf(i);
    *entity = k;
    Entity& e = entities_[k];
    Op op = e.seen && Mix(i ^ 0x9a7c) % 4 == 0 ? Op::kPatch : Op::kUpsert;
    Fields before = e.fields;
    Fields after = before;
    after.balance_cents = Mix(i ^ 0xba1) % 10'000'000;
    after.updated_micros = PositionOf(i).timestamp;
    if (op == Op::kUpsert) after.plan = static_cast<uint32_t>(Mix(i ^ 0x91a) % 3);
    Event ev{.source = kSource,
             .collection = kCollection,
             .key = std::to_string(k),
             .position = PositionOf(i),
             .op = op,
             .payload = op == Op::kUpsert ? DocJson(k, after) : PatchJson(after)};
    uint64_t seq = ++seq_;  // every event here changes its entity's state
    if (puts) AppendRawPuts(e, k, ev, before, after, seq, puts);
    e.fields = after;
    e.seen = true;
    e.last_op = op;
    e.last_index = i;
    e.last_seq = seq;
    e.versions++;
    return ev;
  }

  void AppendRawPuts(const Entity& e, uint64_t k, const Event& ev, const Fields& before,
                     const Fields& after, uint64_t seq, std::vector<RawPut>* puts) const {
    const uint64_t commit_micros = kBaseTimestamp;
    std::string after_doc = DocJson(k, after);
    std::optional<std::string> before_doc;
    if (e.seen) before_doc = DocJson(k, before);

    // The version logs the event (format 3): no log record.
    records::VersionValue nv{.op = ev.op, .seq = seq, .after = after_doc, .logged = true};
    if (ev.op == Op::kPatch) nv.patch = ev.payload;
    puts->push_back(
        {kHistory, keys::HistoryKey(e.prefix, ev.position, kSource), records::Encode(nv)});
    // No link into the predecessor (format 5: keys are newest first; only a
    // tombstone gets one, and this workload deletes nothing).

    records::StateValue st{.doc = after_doc,
                           .position = ev.position,
                           .source = kSource,
                           .seq = seq,
                           .last_change_seq = seq,
                           .change_position = ev.position};
    puts->push_back({kState, e.prefix, records::Encode(st)});

    records::ChangeValue change{.collection = kCollection,
                                .key_bytes = e.key_bytes,
                                .op = e.seen ? ev.op : Op::kUpsert,
                                .before = before_doc,
                                .after = after_doc,
                                .position = ev.position,
                                .source = kSource,
                                .commit_micros = commit_micros};
    puts->push_back({kChanges, keys::SeqKey(seq), records::Encode(change)});

    records::EntitySeqValue es{
        .position = ev.position, .source = kSource, .by_reference = true, .exists = true};
    puts->push_back({kEntitySeq, keys::EntitySeqKey(e.prefix, seq), records::Encode(es)});
  }

  std::vector<Entity> entities_;
  uint64_t next_index_ = 0;
  uint64_t seq_ = 0;
  uint64_t late_permille_ = 0;
  bool raw_ = false;
  uint64_t emitted_ = 0;
  uint64_t late_for_entity_ = 0;
  std::vector<Pending> pending_;  // a min-heap by (arrival, index)
};

// ---------------------------------------------------------------------------
// Raw RocksDB, opened with the options cairn's store uses (store_open.cc Init):
// same column families, parallelism, block cache, bloom filters, checksum,
// compression. cairn also
// installs its retention compaction filter; the baseline has none.
struct RawDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  ~RawDb() {
    for (auto* h : cfs) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    if (db) db->Close().PermitUncheckedError();
  }
};

std::unique_ptr<RawDb> OpenRaw(const std::string& path) {
  rocksdb::Options opts;
  opts.create_if_missing = true;
  opts.create_missing_column_families = true;
  opts.IncreaseParallelism(2);
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(256 << 20);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  table.checksum = rocksdb::kXXH3;
  auto factory = std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const char* name : kCfNames) {
    rocksdb::ColumnFamilyOptions cfo(opts);
    cfo.table_factory = factory;
    cfo.compression = rocksdb::kLZ4Compression;
    cfo.merge_operator = cairn::internal::MergeOperatorOf(name);
    descriptors.emplace_back(name, cfo);
  }
  auto raw = std::make_unique<RawDb>();
  rocksdb::DB* db = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(rocksdb::DBOptions(opts), path, descriptors, &raw->cfs, &db);
  if (!s.ok()) {
    std::cerr << "raw open " << path << ": " << s.ToString() << "\n";
    return nullptr;
  }
  raw->db.reset(db);
  return raw;
}

// ---------------------------------------------------------------------------
// Templates: a cairn store and a raw database holding the preload (one upsert
// per entity), and the generator positioned right after it. Built once;
// every ingest run copies the directory it needs.
struct Templates {
  TempDir cairn_dir{"tmpl-cairn"};
  TempDir raw_dir{"tmpl-raw"};
  Workload after_preload;
};

std::unique_ptr<Templates> BuildTemplates() {
  auto start = std::chrono::steady_clock::now();
  auto t = std::make_unique<Templates>();
  t->after_preload.set_raw(true);
  {
    auto store = cairn::Store::Open(t->cairn_dir.path(), cairn::bench::StoreOptions());
    auto raw = OpenRaw(t->raw_dir.path());
    if (!store.ok() || !raw) abort();
    for (uint64_t done = 0; done < kEntities;) {
      std::vector<Event> batch;
      std::vector<RawPut> puts;
      for (; done < kEntities && batch.size() < 10'000; ++done) {
        batch.push_back(t->after_preload.Next(&puts));
      }
      t->after_preload.AppendBatchPuts(&puts);
      size_t n = batch.size();
      auto r = (*store)->Ingest(std::move(batch), {});
      if (!r.ok() || r->applied != n) {
        std::cerr << "preload: " << r.status().ToString() << "\n";
        abort();
      }
      rocksdb::WriteBatch wb;
      for (const RawPut& p : puts) {
        if (!(p.merge ? wb.Merge(raw->cfs[p.cf], p.key, p.value)
                      : wb.Put(raw->cfs[p.cf], p.key, p.value))
                 .ok())
          abort();
      }
      if (!raw->db->Write(rocksdb::WriteOptions(), &wb).ok()) abort();
    }
  }
  // Reopen once so the copies start from flushed files, not a WAL replay.
  if (!cairn::Store::Open(t->cairn_dir.path(), cairn::bench::StoreOptions()).ok() ||
      !OpenRaw(t->raw_dir.path())) {
    abort();
  }
  t->after_preload.ResetCounters();
  std::cerr << "templates: " << kEntities << " entities preloaded in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
            << " s\n";
  return t;
}

// Built on first use, removed by main() after the run.
std::unique_ptr<Templates> g_templates;

Templates& GetTemplates() {
  if (!g_templates) g_templates = BuildTemplates();
  return *g_templates;
}

// Enough events for a good while, generated with the timer paused.
constexpr size_t kChunkEvents = 20'000;

// When every pooled batch is used, refills the pool with kChunkEvents worth
// of batches from make() (timer paused) and starts it over at *next.
template <typename Batch, typename Make>
void RefillPool(benchmark::State& state, int64_t batch, std::vector<Batch>* pool, size_t* next,
                Make make) {
  if (*next < pool->size()) return;
  state.PauseTiming();
  pool->clear();
  *next = 0;
  size_t batches = std::max<size_t>(1, kChunkEvents / batch);
  for (size_t b = 0; b < batches; ++b) pool->push_back(make());
  state.ResumeTiming();
}

// ---------------------------------------------------------------------------
// Ingest through cairn: batches of `batch` events, `late_permille` of them
// delayed (see Workload).
void RunCairnIngest(benchmark::State& state, int64_t batch, bool durable, uint64_t late_permille) {
  Templates& t = GetTemplates();
  TempDir dir("ingest");
  CopyDb(t.cairn_dir.path(), dir.path());
  auto opened = cairn::Store::Open(dir.path(), cairn::bench::StoreOptions());
  if (!opened.ok()) {
    state.SkipWithError(std::string(opened.status().message()).c_str());
    return;
  }
  std::unique_ptr<cairn::Store> store = *std::move(opened);
  Workload w = t.after_preload;
  w.set_raw(false);
  w.set_late_permille(late_permille);
  std::vector<std::vector<Event>> pool;
  size_t next = 0;
  const cairn::StoreStats before = store->Stats();
  for (auto _ : state) {
    RefillPool(state, batch, &pool, &next, [&] {
      std::vector<Event> events;
      events.reserve(batch);
      for (int64_t i = 0; i < batch; ++i) events.push_back(w.Next(nullptr));
      return events;
    });
    auto r = store->Ingest(std::move(pool[next++]), {.durable = durable});
    if (!r.ok() || r->applied != static_cast<uint64_t>(batch)) {
      state.SkipWithError(r.ok() ? "not every event applied"
                                 : std::string(r.status().message()).c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
  // What the engine handed RocksDB per event: its write batches' records and
  // bytes (WriteBatch::Count / GetDataSize, the quantity RocksDB's own
  // rocksdb.bytes.written statistic adds up), from StoreStats.
  const cairn::StoreStats after = store->Stats();
  const double events = static_cast<double>(std::max<int64_t>(1, state.iterations() * batch));
  state.counters["records_per_event"] =
      static_cast<double>(after.records_written - before.records_written) / events;
  state.counters["bytes_per_event"] =
      static_cast<double>(after.bytes_written - before.bytes_written) / events;
  if (late_permille > 0) {
    state.counters["late_for_entity"] =
        static_cast<double>(w.late_for_entity()) / std::max<uint64_t>(1, w.emitted());
  }
  store.reset();
}

void BM_Ingest(benchmark::State& state) {
  RunCairnIngest(state, state.range(0), state.range(1) != 0, 0);
}

// The same events' records written straight into RocksDB (see RawPut).
void BM_IngestRawBaseline(benchmark::State& state) {
  const int64_t batch = state.range(0);
  const bool durable = state.range(1) != 0;
  Templates& t = GetTemplates();
  TempDir dir("raw");
  CopyDb(t.raw_dir.path(), dir.path());
  auto raw = OpenRaw(dir.path());
  if (!raw) {
    state.SkipWithError("raw open failed");
    return;
  }
  Workload w = t.after_preload;
  w.set_raw(true);
  struct RawBatch {
    std::vector<RawPut> puts;
    uint64_t bytes = 0;
    std::array<uint64_t, kNumCfs> family_bytes{};  // key + value bytes per family
  };
  std::vector<RawBatch> pool;
  size_t next = 0;
  uint64_t puts = 0, bytes = 0;
  std::array<uint64_t, kNumCfs> family_bytes{};
  rocksdb::WriteBatch wb;
  rocksdb::WriteOptions wo;
  wo.sync = durable;
  for (auto _ : state) {
    RefillPool(state, batch, &pool, &next, [&] {
      RawBatch rb;
      for (int64_t i = 0; i < batch; ++i) w.Next(&rb.puts);
      w.AppendBatchPuts(&rb.puts);
      for (const RawPut& p : rb.puts) {
        rb.bytes += p.key.size() + p.value.size();
        rb.family_bytes[p.cf] += p.key.size() + p.value.size();
      }
      return rb;
    });
    const RawBatch& rb = pool[next++];
    for (size_t cf = 0; cf < kNumCfs; ++cf) family_bytes[cf] += rb.family_bytes[cf];
    wb.Clear();
    for (const RawPut& p : rb.puts) {
      if (!(p.merge ? wb.Merge(raw->cfs[p.cf], p.key, p.value)
                    : wb.Put(raw->cfs[p.cf], p.key, p.value))
               .ok())
        state.SkipWithError("put");
    }
    puts += rb.puts.size();
    bytes += rb.bytes;
    rocksdb::Status s = raw->db->Write(wo, &wb);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * batch);
  const double events = static_cast<double>(std::max<int64_t>(1, state.iterations() * batch));
  state.counters["puts_per_event"] = static_cast<double>(puts) / events;
  state.counters["bytes_per_event"] = static_cast<double>(bytes) / events;
  // What each record weighs (key + value, without the batch's framing): the
  // README's on-disk table.
  for (RawCf cf : {kState, kHistory, kEntitySeq, kChanges}) {
    state.counters[std::string(kCfNames[cf]) + "_bytes_per_event"] =
        static_cast<double>(family_bytes[cf]) / events;
  }
  raw.reset();
}

// cairn and its baseline run back to back for each setting, so the drift of
// a shared machine's load matters less to the ratio of the two.
const bool kIngestRegistered = [] {
  for (int durable : {0, 1}) {
    for (int batch : {1, 100, 1000}) {
      for (auto [name, fn] : {std::pair{"BM_Ingest", &BM_Ingest},
                              std::pair{"BM_IngestRawBaseline", &BM_IngestRawBaseline}}) {
        benchmark::RegisterBenchmark(name, fn)
            ->ArgNames({"batch", "durable"})
            ->Args({batch, durable})
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  return true;
}();

// On-disk size: the engine_bench store (the preload, one upsert per entity)
// plus 500,000 more events of the workload in batches of 1000, then a full
// compaction (no retention window, so everything stays): every file of the
// store directory, per event ingested in all.
void BM_DiskAfterIngest(benchmark::State& state) {
  constexpr uint64_t kEvents = 500'000;
  for (auto _ : state) {
    Templates& t = GetTemplates();
    TempDir dir("disk");
    CopyDb(t.cairn_dir.path(), dir.path());
    auto store = cairn::Store::Open(dir.path(), cairn::bench::StoreOptions());
    if (!store.ok()) {
      state.SkipWithError("open failed");
      return;
    }
    Workload w = t.after_preload;
    w.set_raw(false);
    for (uint64_t done = 0; done < kEvents; done += 1000) {
      std::vector<Event> batch;
      for (int i = 0; i < 1000; ++i) batch.push_back(w.Next(nullptr));
      if (!(*store)->Ingest(std::move(batch), {}).ok()) state.SkipWithError("ingest");
    }
    if (!(*store)->CompactNow().ok()) state.SkipWithError("compact");
    store->reset();
    uint64_t bytes = 0;
    for (const auto& f : std::filesystem::recursive_directory_iterator(dir.path())) {
      if (f.is_regular_file()) bytes += f.file_size();
    }
    state.counters["disk_MiB"] = static_cast<double>(bytes) / (1 << 20);
    state.counters["disk_bytes_per_event"] = static_cast<double>(bytes) / (kEvents + kEntities);
  }
}
BENCHMARK(BM_DiskAfterIngest)->Iterations(1)->UseRealTime()->Unit(benchmark::kSecond);

// Batches of 1000, not durable; 0‰ (in order, the reference), 10‰, 100‰ late.
void BM_IngestLate(benchmark::State& state) {
  RunCairnIngest(state, 1000, false, static_cast<uint64_t>(state.range(0)));
}
BENCHMARK(BM_IngestLate)
    ->ArgName("late_permille")
    ->Arg(0)
    ->Arg(10)
    ->Arg(100)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------------------
// Snapshot as of a past position. Entity k's version v sits at position index
// v * entities + k (rounds over all entities, in order); versions after the
// first are upserts, one in four a patch. The snapshot is taken as of the end
// of round versions/2, so with 100 versions each entity has 51 versions at or
// before the point and 49 after it; with 1 version, as of the last position.
//
// Each variant runs twice: with the default block cache (256 MiB), and with
// one large enough to hold what a snapshot touches (4 GiB), to separate the
// cost of the algorithm (one seek per entity) from the cost of reading and
// decompressing blocks the cache cannot keep.
struct SnapshotStore {
  int64_t versions = 0;
  int64_t entities = 0;
  int64_t cache_mib = 0;
  std::unique_ptr<TempDir> dir;
  std::unique_ptr<cairn::Store> store;
};

// One store at a time: rebuilt when the shape changes, reopened when the
// cache size does, removed by main().
SnapshotStore g_snapshot;

double SecondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void BuildSnapshotStore(int64_t versions, int64_t entities, cairn::Store* store) {
  auto start = std::chrono::steady_clock::now();
  const uint64_t total = static_cast<uint64_t>(versions * entities);
  std::vector<Fields> fields(entities);
  for (uint64_t i = 0; i < total;) {
    // Batches of 20,000: the largest group the writer queue forms.
    std::vector<Event> batch;
    batch.reserve(20'000);
    for (; i < total && batch.size() < 20'000; ++i) {
      uint64_t k = i % entities;
      bool first = i < static_cast<uint64_t>(entities);
      Op op = !first && Mix(i ^ 0x9a7c) % 4 == 0 ? Op::kPatch : Op::kUpsert;
      Fields& f = fields[k];
      f.balance_cents = Mix(i ^ 0xba1) % 10'000'000;
      f.updated_micros = PositionOf(i).timestamp;
      if (op == Op::kUpsert) f.plan = static_cast<uint32_t>(Mix(i ^ 0x91a) % 3);
      batch.push_back({.source = kSource,
                       .collection = kCollection,
                       .key = std::to_string(k),
                       .position = PositionOf(i),
                       .op = op,
                       .payload = op == Op::kUpsert ? DocJson(k, f) : PatchJson(f)});
    }
    if (!store->Ingest(std::move(batch), {}).ok()) abort();
  }
  double built = SecondsSince(start);
  // A settled store: every family compacted into its last level, so each
  // variant is measured on the same LSM shape rather than on whatever the
  // build left in memtables and L0.
  start = std::chrono::steady_clock::now();
  if (!store->CompactNow().ok()) abort();
  std::cerr << "snapshot store: " << entities << " entities x " << versions << " versions built in "
            << built << " s, compacted in " << SecondsSince(start) << " s\n";
}

SnapshotStore& GetSnapshotStore(int64_t versions, int64_t entities, int64_t cache_mib) {
  SnapshotStore& s = g_snapshot;
  if (s.versions != versions || s.entities != entities) {
    s.store.reset();
    s.dir = std::make_unique<TempDir>("snapshot");
    auto opened = cairn::Store::Open(s.dir->path(), cairn::bench::StoreOptions());
    if (!opened.ok()) abort();
    BuildSnapshotStore(versions, entities, opened->get());
    s.versions = versions;
    s.entities = entities;
    s.cache_mib = 0;
  }
  if (s.cache_mib != cache_mib) {
    s.store.reset();
    auto opened =
        cairn::Store::Open(s.dir->path(), {.memory_budget = static_cast<size_t>(cache_mib) << 20});
    if (!opened.ok()) abort();
    s.store = *std::move(opened);
    s.cache_mib = cache_mib;
  }
  return s;
}

// A snapshot of the store halfway through its rounds of versions: as of the
// position of the middle round's last event, or (`by_seq`) as of its seq.
void SnapshotHalfway(benchmark::State& state, bool by_seq) {
  const int64_t versions = state.range(0);
  const int64_t entities = state.range(1);
  SnapshotStore& s = GetSnapshotStore(versions, entities, state.range(2));
  const uint64_t round = static_cast<uint64_t>(versions / 2);
  const uint64_t index = round * entities + entities - 1;
  cairn::SnapshotOptions options{.collection = kCollection};
  if (by_seq) {
    options.as_of_seq = index + 1;  // every event here is a change, from seq 1
  } else {
    options.as_of_position = PositionOf(index);
  }
  int64_t returned = 0;
  for (auto _ : state) {
    auto cursor = s.store->NewSnapshot(options);
    if (!cursor.ok()) {
      state.SkipWithError(std::string(cursor.status().message()).c_str());
      break;
    }
    int64_t n = 0;
    while (true) {
      auto more = (*cursor)->Next();
      if (!more.ok()) {
        state.SkipWithError(std::string(more.status().message()).c_str());
        return;
      }
      if (!*more) break;
      benchmark::DoNotOptimize((*cursor)->entity().document.data());
      ++n;
    }
    if (n != entities) {
      state.SkipWithError("snapshot returned the wrong number of entities");
      break;
    }
    returned += n;
  }
  state.SetItemsProcessed(returned);
  state.counters["time_per_entity"] = benchmark::Counter(
      static_cast<double>(returned), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void SnapshotArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"versions", "entities", "cache_mib"});
  // 100 x 100,000 (10M versions) takes about ten minutes to build on a
  // 2-core machine, so it runs only with CAIRN_BENCH_LARGE=1; by default the
  // 100-version variant has 10,000 entities (as many versions in all as
  // 10 x 100,000).
  std::vector<std::pair<int, int>> shapes = {{1, 100'000}, {10, 100'000}, {100, 10'000}};
  if (const char* large = getenv("CAIRN_BENCH_LARGE"); large && std::string(large) == "1") {
    shapes.push_back({100, 100'000});
  }
  // CAIRN_BENCH_SMALL_CACHE=1: a quick stand-in for 100 x 100,000 with the
  // default cache (where the versions a snapshot reads are not cached): an
  // 8 MiB cache, 1 x 100,000 against 100 x 10,000.
  if (const char* small = getenv("CAIRN_BENCH_SMALL_CACHE"); small && std::string(small) == "1") {
    for (auto [versions, entities] : std::vector<std::pair<int, int>>{{1, 100'000}, {100, 10'000}})
      b->Args({versions, entities, 8});
    b->UseRealTime()->Unit(benchmark::kMillisecond);
    return;
  }
  for (auto [versions, entities] : shapes) {
    for (int cache_mib : {256, 4096}) b->Args({versions, entities, cache_mib});
  }
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
void BM_SnapshotAsOfPosition(benchmark::State& state) { SnapshotHalfway(state, false); }
// As of a seq: one entity_seq seek per entity, plus (format 2) the
// superseding change's before-image for an entity changed since.
void BM_SnapshotAsOfSeq(benchmark::State& state) { SnapshotHalfway(state, true); }
BENCHMARK(BM_SnapshotAsOfPosition)->Apply(SnapshotArgs);
BENCHMARK(BM_SnapshotAsOfSeq)->Apply(SnapshotArgs);

// History of one entity: every version with its before/after (`whole`), or
// the versions from the middle round's position on (`from_middle`), of
// entities picked at random from the snapshot store (cache 256 MiB).
// time_per_call is the latency of one History call.
void BM_History(benchmark::State& state) {
  const int64_t versions = state.range(0);
  const int64_t entities = state.range(1);
  const bool from_middle = state.range(2) != 0;
  SnapshotStore& s = GetSnapshotStore(versions, entities, 256);
  cairn::HistoryOptions options;
  if (from_middle) {
    options.from_position = PositionOf(static_cast<uint64_t>(versions / 2) * entities);
  }
  const size_t want = from_middle ? static_cast<size_t>(versions - versions / 2) : versions;
  uint64_t i = 0;
  for (auto _ : state) {
    auto h = s.store->History(kCollection, std::to_string(Mix(i++) % entities), options);
    if (!h.ok() || h->size() != want) {
      state.SkipWithError(h.ok() ? "history returned the wrong number of versions"
                                 : std::string(h.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(h->data());
  }
  state.counters["time_per_call"] =
      benchmark::Counter(static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_History)
    ->ArgNames({"versions", "entities", "from_middle"})
    ->Args({10, 100'000, 0})
    ->Args({100, 10'000, 0})
    ->Args({100, 10'000, 1})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------------------
// Snapshot of a collection whose every entity is deleted: the answer is
// empty, and what it costs should be at worst one state record read per
// tombstone -- in every mode (the current state, as of the last seq, as of
// the last position; a subscription's snapshot is as of the last seq), not
// a versions seek each. 100,000 entities upserted then deleted
// (CAIRN_BENCH_LARGE=1: 300,000), compacted. time_per_entity is per
// tombstone.
struct DeletedStore {
  std::unique_ptr<TempDir> dir;
  std::unique_ptr<cairn::Store> store;
  int64_t entities = 0;
  Position end;
};
DeletedStore g_deleted;

DeletedStore& GetDeletedStore() {
  if (g_deleted.store) return g_deleted;
  g_deleted.entities = std::getenv("CAIRN_BENCH_LARGE") ? 300'000 : 100'000;
  g_deleted.dir = std::make_unique<TempDir>("deleted");
  auto opened = cairn::Store::Open(g_deleted.dir->path(), cairn::bench::StoreOptions());
  if (!opened.ok()) abort();
  g_deleted.store = *std::move(opened);
  uint64_t i = 0;
  for (Op op : {Op::kUpsert, Op::kDelete}) {
    for (int64_t k = 0; k < g_deleted.entities;) {
      std::vector<Event> batch;
      for (; k < g_deleted.entities && batch.size() < 20'000; ++k, ++i) {
        Fields f{.balance_cents = static_cast<uint64_t>(k),
                 .updated_micros = PositionOf(i).timestamp};
        batch.push_back({.source = kSource,
                         .collection = kCollection,
                         .key = std::to_string(k),
                         .position = PositionOf(i),
                         .op = op,
                         .payload = op == Op::kUpsert ? DocJson(k, f) : ""});
      }
      if (!g_deleted.store->Ingest(std::move(batch), {}).ok()) abort();
    }
  }
  g_deleted.end = PositionOf(i);
  if (!g_deleted.store->CompactNow().ok()) abort();
  return g_deleted;
}

void BM_SnapshotOfDeletedCollection(benchmark::State& state) {
  DeletedStore& d = GetDeletedStore();
  cairn::SnapshotOptions o{.collection = kCollection};
  if (state.range(0) == 1) o.as_of_seq = d.store->LastSeq();
  if (state.range(0) == 2) o.as_of_position = d.end;
  for (auto _ : state) {
    auto cursor = d.store->NewSnapshot(o);
    if (!cursor.ok()) {
      state.SkipWithError(std::string(cursor.status().message()).c_str());
      break;
    }
    auto more = (*cursor)->Next();
    if (!more.ok() || *more) {
      state.SkipWithError("a deleted collection's snapshot returned an entity or an error");
      break;
    }
  }
  state.counters["time_per_entity"] =
      benchmark::Counter(static_cast<double>(state.iterations() * d.entities),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_SnapshotOfDeletedCollection)
    ->ArgName("mode")  // 0: current state, 1: as of the last seq, 2: as of the last position
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------
// Per-event CPU work of the write path.

void BM_EncodeKey(benchmark::State& state, const std::string& key) {
  for (auto _ : state) {
    auto kb = keys::EncodeKey(key);
    benchmark::DoNotOptimize(kb);
  }
}
BENCHMARK_CAPTURE(BM_EncodeKey, scalar_int, std::string("1003"));
BENCHMARK_CAPTURE(BM_EncodeKey, scalar_string, std::string(R"("ACC-0001003")"));
// Fields out of order, with whitespace: canonicalization sorts them.
BENCHMARK_CAPTURE(
    BM_EncodeKey, composite,
    std::string(R"({"USER_ID": 123, "FISCAL_CODE": "RSSMRA80A01H501U", "BRANCH": 7})"));

// What Validate does to every upsert/patch payload: parse and re-serialize.
void BM_CanonicalObject(benchmark::State& state) {
  const std::string doc =
      DocJson(1003, {.balance_cents = 123456, .updated_micros = kBaseTimestamp});
  for (auto _ : state) {
    auto c = json::CanonicalObject(doc);
    benchmark::DoNotOptimize(c);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(doc.size()));
}
BENCHMARK(BM_CanonicalObject);

// The fold of one patch event onto the current document.
void BM_ApplyMergePatch(benchmark::State& state) {
  const std::string doc =
      DocJson(1003, {.balance_cents = 123456, .updated_micros = kBaseTimestamp});
  const std::string patch = PatchJson({.balance_cents = 99, .updated_micros = kBaseTimestamp + 1});
  for (auto _ : state) {
    auto merged = json::ApplyMergePatch(doc, patch);
    benchmark::DoNotOptimize(merged);
  }
  state.SetLabel(std::to_string(doc.size()) + " B doc, " + std::to_string(patch.size()) +
                 " B patch");
}
BENCHMARK(BM_ApplyMergePatch);

// ---------------------------------------------------------------------------
// Subscription catch-up from disk: a subscriber that starts at seq 0 reads
// a backlog of `backlog` changes (in-order upserts over 100,000 entities,
// batches of 1000) until it is caught up. The backlog is older than the
// recent-changes ring, so this reads and decodes the stored change feed.
struct CatchUpStore {
  std::unique_ptr<TempDir> dir;
  std::unique_ptr<cairn::Store> store;
};
std::map<int64_t, CatchUpStore> g_catch_up;

cairn::Store* CatchUpBacklog(int64_t backlog) {
  CatchUpStore& c = g_catch_up[backlog];
  if (c.store) return c.store.get();
  c.dir = std::make_unique<TempDir>("catchup");
  auto opened = cairn::Store::Open(c.dir->path(), cairn::bench::StoreOptions());
  if (!opened.ok()) return nullptr;
  c.store = *std::move(opened);
  constexpr int64_t kBatch = 1000;
  for (int64_t first = 0; first < backlog; first += kBatch) {
    std::vector<Event> batch;
    for (int64_t i = first; i < std::min(backlog, first + kBatch); ++i) {
      uint64_t k = static_cast<uint64_t>(i) % 100'000;
      batch.push_back(Event{.source = kSource,
                            .collection = kCollection,
                            .key = std::to_string(k),
                            .position = PositionOf(static_cast<uint64_t>(i)),
                            .payload = DocJson(k, {.balance_cents = static_cast<uint64_t>(i),
                                                   .updated_micros = kBaseTimestamp + i})});
    }
    if (!c.store->Ingest(std::move(batch), {}).ok()) return nullptr;
  }
  return c.store.get();
}

void BM_SubscriptionCatchUp(benchmark::State& state) {
  cairn::Store* store = CatchUpBacklog(state.range(0));
  if (store == nullptr) {
    state.SkipWithError("building the backlog failed");
    return;
  }
  uint64_t changes = 0;
  for (auto _ : state) {
    auto sub = store->Subscribe(
        cairn::SubscribeOptions{.start = cairn::SubscribeOptions::Start::kFromSeq, .from_seq = 0});
    if (!sub.ok()) {
      state.SkipWithError(std::string(sub.status().message()).c_str());
      break;
    }
    cairn::SubscriptionItem item;
    for (;;) {
      auto got = (*sub)->Next(absl::ZeroDuration(), &item);
      if (!got.ok() || !*got) {
        state.SkipWithError("the subscription stopped before it caught up");
        break;
      }
      if (item.kind == cairn::SubscriptionItem::Kind::kCaughtUp) break;
      ++changes;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(changes));
}
BENCHMARK(BM_SubscriptionCatchUp)
    ->ArgName("backlog")
    ->Arg(100'000)
    ->Arg(1'000'000)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Stores close before their directories go.
  g_snapshot.store.reset();
  g_snapshot.dir.reset();
  g_deleted.store.reset();
  g_deleted.dir.reset();
  g_templates.reset();
  for (auto& [backlog, c] : g_catch_up) c.store.reset();
  g_catch_up.clear();
  return 0;
}
