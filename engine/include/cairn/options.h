// Options for opening a store and for individual calls. Aggregates meant for
// designated initializers: `cairn::Options{.retention = {.max_commits = 1000}}`.
#ifndef CAIRN_OPTIONS_H_
#define CAIRN_OPTIONS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cairn/event.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace cairn {

// Retention window (DESIGN §5). Default: keep everything.
//  * max_age: event time and commit time. Log entries and history versions
//    whose position timestamp is older than now - max_age, and change records
//    committed before it, are removed; events older than it are rejected.
//  * max_commits: keep the last N commits of the change feed (seq axis).
// The newest version of each entity below the window is kept so that every
// point inside the window can still be answered; current state is never
// removed; a deleted entity's tombstone is kept until it leaves the window.
struct RetentionOptions {
  std::optional<absl::Duration> max_age;
  std::optional<uint64_t> max_commits;
};

struct Options {
  bool create_if_missing = true;
  RetentionOptions retention;
  // How often the background thread recomputes the retention horizon.
  absl::Duration retention_interval = absl::Seconds(10);
  // Wall clock in microseconds since the epoch. Tests inject their own.
  std::function<uint64_t()> now_micros;
  // The store's memory budget in bytes (README "Memory"): the block cache,
  // every column family's memtables and the ring of recent changes share it.
  // The ring takes at most an eighth of it; the rest is one block cache, to
  // which RocksDB's WriteBufferManager charges the memtables, capped at half
  // of the budget, so cache and memtables together stay within it. It also
  // bounds the WAL: past one budget of WAL files, the families that pin the
  // oldest are flushed (max_total_wal_size). 0: no budget (the layout before
  // budgets: a block cache of block_cache_bytes, 64 MiB write buffers per
  // family, nothing capping their sum or the WAL).
  size_t memory_budget = 256 << 20;
  // Bytes of memory_budget that the embedding program's own buffers take
  // (cairnd: its subscribers' messages in flight); the block cache gets that
  // much less. At most half of the budget; ignored without a budget.
  size_t reserved_bytes = 0;
  // The block cache size when memory_budget is 0.
  size_t block_cache_bytes = 256 << 20;
  // The environment RocksDB reaches the file system through; null: the
  // default. Not owned: it must outlive the store. For embedders with a file
  // system of their own, and for the fault tests, which wrap the default one
  // to drop unsynced writes at a simulated power loss or to fill the disk.
  rocksdb::Env* env = nullptr;
};

// A side record: a small named value that a layer above the engine keeps in
// the store (a connector's definition or resume point; Store::PutSideRecord).
// Names are 1 to 1,024 bytes, values at most 1 MiB.
struct SideRecord {
  std::string name;
  std::string value;
};

struct IngestOptions {
  // Acknowledge only after the batch is fsynced. Concurrent durable writers
  // share fsyncs (group commit).
  bool durable = false;
  // Written in the batch's own atomic write: after a crash either the batch
  // and these records are in the store, or neither is (a connector commits
  // the resume point of what it read with the events it read). Written even
  // when every event is a duplicate; at most 64.
  std::vector<SideRecord> side_records;
};

struct SnapshotOptions {
  // At most one of the two; neither means "now".
  std::optional<uint64_t> as_of_seq;       // transaction time
  std::optional<Position> as_of_position;  // event time
  std::string collection;                  // empty: all collections
  // Matches entities whose key is a string starting with this prefix
  // (requires `collection`).
  std::string key_prefix;
  bool include_incomplete = true;
};

struct HistoryOptions {
  bool reverse = false;  // newest first
  // Inclusive bounds; unset means unbounded.
  std::optional<Position> from_position;
  std::optional<Position> to_position;
  std::optional<uint64_t> from_seq;
  std::optional<uint64_t> to_seq;
  size_t limit = 0;  // 0: no limit
};

// Which changes a subscription delivers. Empty lists match everything.
struct SubscribeFilter {
  std::vector<std::string> sources;
  std::vector<std::string> collections;
  std::string key_prefix;         // string keys starting with it
  std::vector<std::string> keys;  // explicit keys, JSON text like Event::key
};

struct SubscribeOptions {
  enum class Start {
    kFromSeq,   // changes with seq > from_seq
    kNow,       // changes committed after the call
    kSnapshot,  // a snapshot as of some seq N, then every change after N
  };
  SubscribeFilter filter;
  Start start = Start::kNow;
  uint64_t from_seq = 0;
  bool include_incomplete = true;  // for the snapshot part
};

}  // namespace cairn

#endif  // CAIRN_OPTIONS_H_
