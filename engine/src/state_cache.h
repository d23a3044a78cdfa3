// StateCache: the state records of recently written entities, kept by the
// writer-queue leader so that folding an event into a hot entity reads its
// state from memory instead of through the group's batch index and RocksDB
// (the one point read of an in-order event; a tenth of its instructions).
//
// Only the leader touches it (store_impl.h's leader-only members), and only
// the leader writes state records, so a committed entry is always the stored
// record: live state is never rewritten or dropped by compaction (only
// tombstones are, which are never cached). Writes of the group being folded
// are pending until its RocksDB write succeeds: a batch rolled back to its
// save point drops its own, a failed group write drops them all.
//
// Bounded in bytes: two generations, the newer one filled by writes and by
// hits promoted from the older; when the newer passes half the bound, the
// older is dropped and the newer takes its place (an LRU approximation at
// O(1) per operation, and at most `bound` bytes of keys and values).
#ifndef CAIRN_ENGINE_SRC_STATE_CACHE_H_
#define CAIRN_ENGINE_SRC_STATE_CACHE_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace cairn::internal {

class StateCache {
 public:
  explicit StateCache(size_t bound) : bound_(bound) {}

  // The state record of `entity`: the batch's or the group's pending write
  // (a tombstone too: what is pending is what the batch index holds), else a
  // committed entry; null when not known here (read the store). The pointer
  // is good until the next call.
  const std::string* Find(std::string_view entity_view) {
    const absl::string_view entity(entity_view.data(), entity_view.size());
    if (auto it = batch_.find(entity); it != batch_.end()) return &it->second.record;
    if (auto it = group_.find(entity); it != group_.end()) return &it->second.record;
    if (auto it = newer_.find(entity); it != newer_.end()) return &it->second;
    if (auto it = older_.find(entity); it != older_.end()) {
      // Promoted, so that an entity in use survives the next turnover.
      std::string key(it->first);
      std::string value = std::move(it->second);
      older_bytes_ -= key.size() + value.size();
      older_.erase(it);
      return Insert(std::move(key), std::move(value));
    }
    return nullptr;
  }

  // A write of the batch being folded. `live`: the record has a document
  // (only those are kept once committed).
  void Put(std::string_view entity, std::string record, bool live) {
    batch_[absl::string_view(entity.data(), entity.size())] = Pending{std::move(record), live};
  }

  // The batch succeeded (its writes join the group's) or was rolled back to
  // its save point (they are forgotten).
  void KeepBatch() {
    for (auto& [k, v] : batch_) group_[k] = std::move(v);
    batch_.clear();
  }
  void DropBatch() { batch_.clear(); }

  // The group's RocksDB write succeeded: its writes are the stored records.
  void CommitGroup() {
    KeepBatch();
    for (auto& [k, v] : group_) {
      Erase(k);
      if (v.live) Insert(k, std::move(v.record));
    }
    group_.clear();
  }
  // The group's write failed: nothing of it is stored.
  void DropGroup() {
    batch_.clear();
    group_.clear();
  }

  // Everything, committed entries too (after a commit that wrote state
  // without the cache: an exclusive session commit).
  void Clear() {
    DropGroup();
    newer_ = {};
    older_ = {};
    newer_bytes_ = older_bytes_ = 0;
  }

  size_t bytes() const { return newer_bytes_ + older_bytes_; }

 private:
  struct Pending {
    std::string record;
    bool live = false;
  };

  const std::string* Insert(std::string key, std::string value) {
    const size_t size = key.size() + value.size();
    if (size > bound_ / 2) return nullptr;
    if (newer_bytes_ + size > bound_ / 2) {
      older_ = std::move(newer_);
      older_bytes_ = newer_bytes_;
      newer_ = {};
      newer_bytes_ = 0;
    }
    newer_bytes_ += size;
    auto [it, inserted] = newer_.insert_or_assign(std::move(key), std::move(value));
    return &it->second;
  }
  void Erase(const std::string& key) {
    if (auto it = newer_.find(key); it != newer_.end()) {
      newer_bytes_ -= it->first.size() + it->second.size();
      newer_.erase(it);
    }
    if (auto it = older_.find(key); it != older_.end()) {
      older_bytes_ -= it->first.size() + it->second.size();
      older_.erase(it);
    }
  }

  const size_t bound_;
  // Pending: the batch being folded, then the rest of the group.
  absl::flat_hash_map<std::string, Pending> batch_;
  absl::flat_hash_map<std::string, Pending> group_;
  absl::flat_hash_map<std::string, std::string> newer_, older_;
  size_t newer_bytes_ = 0, older_bytes_ = 0;
};

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_SRC_STATE_CACHE_H_
