// The writer queue (LevelDB's DBImpl::Write, RocksDB's WriteThread): callers
// queue writers; the one at the front, the leader, takes a group of queued
// writers, commits them together (outside the queue's lock) and wakes each
// with its result; the next writer at the front leads the next group. So
// one thread at a time commits, and concurrent writers share commits (and
// fsyncs) instead of taking turns.
//
// A group is everything queued up to `max_group_weight` (at least one
// writer); an exclusive writer commits alone.
//
// W is the caller's writer type; it provides
//   size_t weight() const;   // what it counts against max_group_weight
//   bool exclusive() const;  // commits alone
// and has the public members below (QueuedWriter holds them).
#ifndef CAIRN_ENGINE_SRC_WRITE_QUEUE_H_
#define CAIRN_ENGINE_SRC_WRITE_QUEUE_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace cairn::internal {

// What the queue keeps per writer; a writer type derives from it.
struct QueuedWriter {
  bool done = false;    // committed or failed; set by the leader
  absl::Status status;  // its own failure, or the group's
  absl::CondVar cv;     // wakes it when done or at the front
};

template <typename W>
class WriteQueue {
 public:
  // Commits a group (in queue order); a failure here fails every writer of
  // the group whose own status is OK.
  using CommitFn = std::function<absl::Status(std::vector<W*>& group)>;

  explicit WriteQueue(size_t max_group_weight) : max_group_weight_(max_group_weight) {}

  // Queues `ws` together, in order, and returns once each is done (see
  // QueuedWriter::status). The calling thread may lead groups, its own
  // writers' and others', committing them with `commit`.
  void Run(const std::vector<W*>& ws, const CommitFn& commit) {
    absl::MutexLock l(&mu_);
    for (W* w : ws) writers_.push_back(w);
    // Ours are contiguous in the queue, so when one of them reaches the
    // front the ones before it are done: wait on the first not yet done.
    for (W* w : ws) {
      while (!w->done && w != writers_.front()) w->cv.Wait(&mu_);
      if (w->done) continue;
      std::vector<W*> group = TakeGroupLocked();
      mu_.Unlock();
      absl::Status group_status = commit(group);
      mu_.Lock();
      for (W* x : group) {
        if (!group_status.ok() && x->status.ok()) x->status = group_status;
        writers_.pop_front();
        x->done = true;
        x->cv.Signal();
      }
      if (!writers_.empty()) writers_.front()->cv.Signal();
    }
  }

 private:
  // The leader's group: the front of the queue up to max_group_weight_.
  std::vector<W*> TakeGroupLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<W*> group;
    size_t total = 0;
    for (W* x : writers_) {
      if (x->exclusive() || (!group.empty() && group.front()->exclusive())) {
        if (group.empty()) group.push_back(x);
        break;
      }
      size_t n = x->weight();
      if (!group.empty() && total + n > max_group_weight_) break;
      group.push_back(x);
      total += n;
    }
    return group;
  }

  const size_t max_group_weight_;
  absl::Mutex mu_;
  std::deque<W*> writers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_SRC_WRITE_QUEUE_H_
