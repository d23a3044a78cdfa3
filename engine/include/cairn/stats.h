// What a store reports about itself (Store::Stats; over gRPC, Admin.Stats).
// Plain value types, shared by the engine and the client.
#ifndef CAIRN_STATS_H_
#define CAIRN_STATS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "cairn/event.h"

namespace cairn {

struct SourceStats {
  uint64_t accepted = 0;
  uint64_t duplicates = 0;
  uint64_t conflicts = 0;
  uint64_t rejected_batches = 0;
  Position last_position;
};

// A latency distribution since the store was opened: how many took at most
// each of kBoundsMicros (not cumulative: counts[i] is those in
// (kBoundsMicros[i-1], kBoundsMicros[i]]; the last count is those above the
// last bound), how many in all and their sum.
struct LatencyHistogram {
  static constexpr std::array<uint64_t, 15> kBoundsMicros = {
      50,    100,   250,    500,    1000,   2500,    5000,   10000,
      25000, 50000, 100000, 250000, 500000, 1000000, 5000000};
  std::array<uint64_t, kBoundsMicros.size() + 1> counts{};
  uint64_t count = 0;
  uint64_t sum_micros = 0;
};

struct StoreStats {
  uint64_t last_seq = 0;
  // Oldest seq / position still answerable (the retention horizon).
  uint64_t oldest_seq = 0;
  Position oldest_position;
  // What ingest commits wrote since the store was opened: RocksDB writes,
  // the records (puts and deletes) in them, and their bytes (the write
  // batches' size: keys, values and RocksDB's per-record framing).
  uint64_t commits = 0;
  uint64_t records_written = 0;
  uint64_t bytes_written = 0;
  // Memory and disk, now (README "Memory"). The block cache's usage includes
  // the memtables charged to it under a budget.
  struct Resources {
    uint64_t memory_budget = 0;  // 0: none
    uint64_t block_cache_capacity = 0;
    uint64_t block_cache_usage = 0;
    uint64_t memtables = 0;       // every family's, active and immutable
    uint64_t recent_changes = 0;  // the ring's bytes
    uint64_t reserved = 0;        // Options::reserved_bytes, under a budget
    // Subscribers' messages in flight (filled by cairnd, within `reserved`;
    // 0 from an embedded store).
    uint64_t subscriber_buffers = 0;
    uint64_t wal_bytes = 0;
    uint64_t wal_files = 0;
    uint64_t sst_bytes = 0;
    uint64_t pending_compaction_bytes = 0;
    // Block cache lookups since open that found the block, and those that
    // read it from disk (RocksDB's BLOCK_CACHE_HIT / _MISS tickers).
    uint64_t block_cache_hits = 0;
    uint64_t block_cache_misses = 0;
  } resources;
  // Since open: `ingest` is a batch's time from entering the write queue to
  // its commit (the wait for the group before it, then its group's fold and
  // write: what Ingest adds to decoding); `commit` is each group commit's
  // RocksDB write, `commit_sync` the same for groups written with fsync
  // (a durable batch in the group).
  struct Latencies {
    LatencyHistogram ingest;
    LatencyHistogram commit;
    LatencyHistogram commit_sync;
  } latency;
  std::map<std::string, SourceStats> sources;
  // Backups taken by this store since it was opened (Store::Backup; cairnd's
  // scheduled ones and Admin.Backup): the last good one, and failures.
  struct Backups {
    uint64_t count = 0;
    uint64_t errors = 0;
    uint32_t last_id = 0;
    uint64_t last_seq = 0;
    int64_t last_unix_micros = 0;  // when it was taken
    uint64_t last_size_bytes = 0;
    uint64_t last_copied_bytes = 0;
    int64_t last_duration_micros = 0;
    std::string last_error;  // the last attempt's, empty when it succeeded
  } backups;
  // Set when opening found the write-ahead log cut by a torn or corrupt
  // record: the store recovered every commit before it (a consistent prefix,
  // up to last_seq at open) and says so here; empty otherwise. cairnd logs it
  // at start.
  std::string recovery;
  // Versions (README "Install"): this engine's (cairn::kVersion), the store's
  // on-disk format, the cairn version that created the store (empty for a
  // store created before stores recorded it) and the one that opened it last
  // before this open (empty for a new store; another version after an
  // upgrade or a downgrade).
  struct Versions {
    std::string cairn;
    uint64_t format = 0;
    std::string created_by;
    std::string previously_opened_by;
  } versions;
};

}  // namespace cairn

#endif  // CAIRN_STATS_H_
