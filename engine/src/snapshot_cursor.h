// Snapshot cursors: the entities of a collection (or the store) as of now,
// a seq or a position, read under one RocksDB snapshot.
#ifndef CAIRN_ENGINE_SNAPSHOT_CURSOR_H_
#define CAIRN_ENGINE_SNAPSHOT_CURSOR_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "cairn/store.h"
#include "records.h"
#include "rocksdb/db.h"

namespace cairn::internal {

// Iterates one column family between bounds, with the store's read snapshot.
struct ScanRange {
  std::string lower;
  std::string upper;  // empty: unbounded
};

// The key range of a snapshot's collection and key prefix (the whole store
// when neither is given).
absl::StatusOr<ScanRange> SnapshotRange(const SnapshotOptions& o);

// Splits an entity key (collection | key bytes) into the collection and the
// key's canonical JSON.
absl::Status SplitEntity(std::string_view entity, std::string* collection, std::string* key_json);

Entity MakeEntity(std::string collection, std::string key_json, const records::Doc& doc,
                  bool complete, Position pos, std::string source, uint64_t seq);

enum class SnapshotMode { kCurrent, kAsOfSeq, kAsOfPosition };

// Takes ownership of `snap` (released with the cursor). `versions` is the
// family the point-in-time modes seek in: entity_seq for kAsOfSeq, history
// for kAsOfPosition (unused for kCurrent). `bulk`: a whole collection or
// store, read ahead and kept out of the block cache.
// `changes` is read as of a seq, for the documents of format-2 entity_seq
// entries that a later change superseded.
std::unique_ptr<SnapshotCursor> NewSnapshotCursor(
    rocksdb::DB* db, rocksdb::ColumnFamilyHandle* state, rocksdb::ColumnFamilyHandle* versions,
    rocksdb::ColumnFamilyHandle* changes, const rocksdb::Snapshot* snap, SnapshotMode mode,
    ScanRange range, uint64_t seq, Position pos, bool include_incomplete, bool bulk);

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_SNAPSHOT_CURSOR_H_
