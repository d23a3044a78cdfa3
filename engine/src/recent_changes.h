// The recent-changes ring: the most recent committed changes, decoded and
// consecutive by seq, that subscriptions near the head read instead of each
// opening an iterator on the change feed and decoding the same records.
// Bounded in count and bytes (kRecentChanges, kRecentBytes in config.h).
// Thread-safe: the commit path appends, subscriptions read.
#ifndef CAIRN_ENGINE_SRC_RECENT_CHANGES_H_
#define CAIRN_ENGINE_SRC_RECENT_CHANGES_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cairn/event.h"

namespace cairn::internal {

class RecentChanges {
 public:
  RecentChanges(size_t max_changes, size_t max_bytes)
      : max_changes_(max_changes), max_bytes_(max_bytes) {}

  // Appends one commit's changes (consecutive seqs). Changes that do not
  // follow the newest held one (a commit that was not captured, a session
  // commit) restart the ring with them; the oldest are dropped past either
  // bound.
  void Append(std::vector<Change> changes);

  // When the ring holds seq after_seq + 1: appends the held changes with
  // seq in (after_seq, last], at most `max`, to *out and returns how many;
  // *last_read is the seq of the last one. Otherwise returns 0 and leaves
  // both alone (the caller reads the change feed).
  size_t Read(uint64_t after_seq, uint64_t last, size_t max, std::vector<Change>* out,
              uint64_t* last_read);

  // The bytes held now.
  size_t bytes() const {
    absl::MutexLock l(&mu_);
    return bytes_;
  }
  // What a change weighs against max_bytes.
  static size_t Weight(const Change& c) {
    return c.before.size() + c.after.size() + c.key.size() + c.collection.size() + c.source.size() +
           sizeof(Change);
  }

 private:
  const size_t max_changes_;
  const size_t max_bytes_;
  mutable absl::Mutex mu_;
  std::deque<Change> changes_ ABSL_GUARDED_BY(mu_);
  size_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_SRC_RECENT_CHANGES_H_
