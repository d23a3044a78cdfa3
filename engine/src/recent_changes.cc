#include "recent_changes.h"

namespace cairn::internal {

void RecentChanges::Append(std::vector<Change> changes) {
  if (changes.empty()) return;
  absl::MutexLock l(&mu_);
  if (!changes_.empty() && changes_.back().seq + 1 != changes.front().seq) {
    changes_.clear();
    bytes_ = 0;
  }
  for (Change& c : changes) {
    bytes_ += Weight(c);
    changes_.push_back(std::move(c));
  }
  while (!changes_.empty() && (changes_.size() > max_changes_ || bytes_ > max_bytes_)) {
    bytes_ -= Weight(changes_.front());
    changes_.pop_front();
  }
}

size_t RecentChanges::Read(uint64_t after_seq, uint64_t last, size_t max, std::vector<Change>* out,
                           uint64_t* last_read) {
  absl::MutexLock l(&mu_);
  if (changes_.empty() || after_seq + 1 < changes_.front().seq ||
      after_seq >= changes_.back().seq || after_seq >= last) {
    return 0;
  }
  size_t n = 0;
  for (size_t i = after_seq + 1 - changes_.front().seq;
       i < changes_.size() && n < max && changes_[i].seq <= last; ++i, ++n) {
    out->push_back(changes_[i]);
    *last_read = changes_[i].seq;
  }
  return n;
}

}  // namespace cairn::internal
