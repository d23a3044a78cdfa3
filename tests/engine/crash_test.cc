// Crash atomicity (DESIGN §3): "a crash at any instant leaves either all of a
// batch or none of it", and a `durable=true` acknowledgement means the batch
// survives. A forked child ingests durable batches in a loop and records each
// acknowledged batch id in a side file after the ack; the parent SIGKILLs it
// at a random moment, reopens the store and checks that every acknowledged
// batch is there, that no batch is there in part, and that the state, the
// history and the counters are exactly the fold of the batches present.
//
// The child is a fresh process (fork, then exec of this binary), not a bare
// fork: the parent has opened stores, so RocksDB's background threads live
// in it, and a forked copy of a process whose thread held a lock at the
// fork can block forever on it.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cairn/backup.h"
#include "cairn/store.h"
#include "crash_check.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using crash_check::BatchEvents;
using crash_check::kBatchEvents;
using crash_check::VerifyWholeBatches;

constexpr int kCycles = 24;

// Retention of the "retention" child: the last kRetainedCommits commits.
constexpr uint64_t kRetainedCommits = 40;
// Records per session of the "session" child.
constexpr int kSessionKeys = 5;

int OpenAcks(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) _exit(3);
  return fd;
}

// Records `n` as acknowledged: one line, fsynced.
void Ack(int fd, uint64_t n) {
  std::string line = absl::StrCat(n, "\n");
  if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(6);
  if (fsync(fd) != 0) _exit(7);
}

// The "ingest" child: ingest batches first, first+1, ... durably; after each
// ack, append its id to the side file and fsync it. Never returns. Uses only
// its own Store and plain syscalls (no gtest, no stdio buffers shared with
// the parent). The "checkpoint" child also moves checkpoint "crash" to the
// last seq after each batch (and acknowledges the batch after that); the
// "retention" child keeps the last kRetainedCommits commits, recomputes the
// horizon every millisecond and compacts every eighth batch; the "backup"
// child adds a backup to <store>.backups after each batch (and acknowledges
// the batch after that).
[[noreturn]] void ChildIngest(const std::string& mode, const std::string& store_path,
                              const std::string& acks_path, uint64_t first) {
  int fd = OpenAcks(acks_path);
  Options o;
  const bool retention = mode == "retention", checkpoint = mode == "checkpoint",
             backup = mode == "backup";
  if (retention) {
    o.retention.max_commits = kRetainedCommits;
    o.retention_interval = absl::Milliseconds(1);
  }
  auto store = Store::Open(store_path, o);
  if (!store.ok()) _exit(4);
  for (uint64_t b = first; b < first + 100000; ++b) {
    auto r = (*store)->Ingest(BatchEvents(b), {.durable = true});
    if (!r.ok() || r->applied != kBatchEvents) _exit(5);
    if (checkpoint && !(*store)->PutCheckpoint("crash", (*store)->LastSeq()).ok()) _exit(9);
    if (retention && b % 8 == 7 && !(*store)->CompactNow().ok()) _exit(10);
    if (backup && !(*store)->Backup(store_path + ".backups").ok()) _exit(15);
    Ack(fd, b);
  }
  // Not reached in practice. Leave without running destructors (the child
  // runs before main; nothing of it needs tearing down).
  _exit(0);
}

std::string SessionKey(int k) { return absl::StrCat("\"k", k, "\""); }

// The "session" child: accrue sessions first, first+1, ... on collection
// "sess", each upserting the same kSessionKeys keys with its own number, then
// committed; the session's number is acknowledged after the commit.
[[noreturn]] void ChildSessions(const std::string& store_path, const std::string& acks_path,
                                uint64_t first) {
  int fd = OpenAcks(acks_path);
  auto store = Store::Open(store_path, Options{});
  if (!store.ok()) _exit(4);
  if (!(*store)->PutSource({.name = "sess", .format = "bitbroker"}).ok()) _exit(14);
  for (uint64_t n = first; n < first + 100000; ++n) {
    auto id = (*store)->OpenSession("sess", "sess", SessionMode::kAccrue);
    if (!id.ok()) _exit(11);
    std::vector<SessionRecord> records;
    for (int k = 0; k < kSessionKeys; ++k) {
      records.push_back({SessionKey(k), absl::StrCat(R"({"session":)", n, R"(,"k":)", k, "}")});
    }
    if (!(*store)->SessionUpsert(*id, std::move(records)).ok()) _exit(12);
    auto r = (*store)->CloseSession(*id, true);
    if (!r.ok() || r->applied != kSessionKeys) _exit(13);
    Ack(fd, n);
  }
  _exit(0);
}

// Set in the environment of the re-executed child: what it is to do.
constexpr const char* kChildEnv = "CAIRN_CRASH_TEST_CHILD";  // "<mode>\n<store>\n<acks>\n<first>"

// In a re-executed child, the child's work is all the binary does: once
// main has started (RocksDB's own static state is set up by then), before
// any test. Mode "open" only opens the store (and leaves it).
class ChildEnvironment : public testing::Environment {
 public:
  void SetUp() override {
    std::vector<std::string> f = absl::StrSplit(getenv(kChildEnv), '\n');
    if (f.size() != 4) _exit(2);
    const uint64_t first = std::stoull(f[3]);
    if (f[0] == "session") ChildSessions(f[1], f[2], first);
    if (f[0] == "open") _exit(Store::Open(f[1], Options{}).ok() ? 0 : 4);
    // <backup dir>, <target>: restores the newest backup.
    if (f[0] == "restore") _exit(backup::Restore(f[1], f[2]).ok() ? 0 : 4);
    ChildIngest(f[0], f[1], f[2], first);
  }
};
[[maybe_unused]] testing::Environment* const kChildEnvironment =
    getenv(kChildEnv) ? testing::AddGlobalTestEnvironment(new ChildEnvironment) : nullptr;

}  // namespace

namespace crash_check {

pid_t StartChild(const std::string& mode, const std::string& store_path,
                 const std::string& acks_path, uint64_t first, const std::string& crash_point) {
  // Everything the child needs is built before the fork: between fork and
  // exec it only calls async-signal-safe functions.
  std::string env =
      absl::StrCat(kChildEnv, "=", mode, "\n", store_path, "\n", acks_path, "\n", first);
  std::string point = absl::StrCat("CAIRN_CRASH_POINT=", crash_point);
  char arg0[] = "engine_test";
  char* argv[] = {arg0, nullptr};
  char* envp[] = {env.data(), crash_point.empty() ? nullptr : point.data(), nullptr};
  pid_t pid = fork();
  if (pid != 0) return pid;
  execve("/proc/self/exe", argv, envp);
  _exit(8);
}

}  // namespace crash_check

namespace {

using crash_check::StartChild;

// Batch ids in the side file; a torn last line (killed mid-write) is ignored.
std::set<uint64_t> ReadAcks(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  std::set<uint64_t> out;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    out.insert(std::stoull(text.substr(start, nl - start)));
  }
  return out;
}

size_t CountLines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// Reopens the store and checks it against the acknowledged batches, after a
// child that started at batch `first`. Returns the number of batches present
// (they are 0..n-1).
uint64_t Verify(const std::string& store_path, const std::set<uint64_t>& acked, uint64_t first) {
  uint64_t present = VerifyWholeBatches(store_path);
  // Every acknowledged batch survived; the child wrote at most one beyond
  // them (committed, killed before its id was recorded).
  uint64_t acked_end = acked.empty() ? 0 : *acked.rbegin() + 1;
  EXPECT_GE(present, acked_end);
  EXPECT_LE(present, std::max(acked_end, first) + 1);
  for (uint64_t b : acked) EXPECT_LT(b, present);
  return present;
}

TEST(CrashTest, KilledWriterLeavesWholeBatchesOnly) {
  TempDir dir;
  const std::string store_path = dir.Sub("store");
  const std::string acks_path = dir.Sub("acks");
  std::mt19937 rng(42);
  uint64_t next = 0;
  size_t killed_mid_ingest = 0;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle));
    size_t acks_before = CountLines(acks_path);
    pid_t pid = StartChild("ingest", store_path, acks_path, next, "");
    ASSERT_GE(pid, 0) << "fork failed";

    // Mostly kill it while it ingests (after a fresh ack, plus a random
    // delay); every fourth cycle at a random instant, maybe while it opens or
    // recovers the store.
    bool mid_ingest = cycle % 4 != 3;
    if (mid_ingest) {
      absl::Time deadline = absl::Now() + absl::Seconds(20);
      while (CountLines(acks_path) == acks_before && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      EXPECT_GT(CountLines(acks_path), acks_before) << "child made no progress";
      absl::SleepFor(absl::Microseconds(rng() % 40000));
    } else {
      absl::SleepFor(absl::Microseconds(rng() % 60000));
    }
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    // Killed by us, not exited with an error of its own.
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
    killed_mid_ingest += mid_ingest;

    uint64_t present = Verify(store_path, ReadAcks(acks_path), next);
    ASSERT_FALSE(::testing::Test::HasFailure());
    ASSERT_GE(present, next);  // nothing that was there before went away
    next = present;
  }
  EXPECT_GT(next, static_cast<uint64_t>(kCycles));  // batches were written
  EXPECT_EQ(killed_mid_ingest, static_cast<size_t>(kCycles - kCycles / 4));
}

// --- Named crash points (engine/src/crash_point.h) ---------------------------

// Runs the child of `mode` `runs` times with `point` armed, each time past a
// random number (below `max_skip`) of its hits; each run must end killed at
// the point, and `verify(store, acks, first)` checks what it left and returns
// where the next run starts.
template <typename VerifyFn>
void KillAtPoint(const std::string& mode, const std::string& point, int runs, uint32_t max_skip,
                 VerifyFn verify) {
  TempDir dir;
  const std::string store_path = dir.Sub("store");
  const std::string acks_path = dir.Sub("acks");
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>()(point)));
  uint64_t next = 0;
  for (int run = 0; run < runs; ++run) {
    const std::string armed = absl::StrCat(point, ":", rng() % max_skip);
    SCOPED_TRACE(absl::StrCat(mode, " child killed at ", armed, ", run ", run, " from ", next));
    pid_t pid = StartChild(mode, store_path, acks_path, next, armed);
    ASSERT_GE(pid, 0) << "fork failed";
    int status = 0;
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    pid_t done = 0;
    while ((done = waitpid(pid, &status, WNOHANG)) == 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(2));
    }
    if (done == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL() << "the child never reached " << point;
    }
    // Killed by the crash point, not exited with an error of its own.
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited with " << WEXITSTATUS(status);
    uint64_t present = verify(store_path, ReadAcks(acks_path), next);
    ASSERT_FALSE(::testing::Test::HasFailure());
    ASSERT_GE(present, next);  // nothing that was there before went away
    next = present;
  }
}

constexpr int kRunsPerPoint = 20;

TEST(CrashPointTest, GroupCommit) {
  for (const char* point : {"commit.before_write", "commit.after_write"}) {
    KillAtPoint("ingest", point, kRunsPerPoint, 30, Verify);
  }
}

// The checkpoint moves with the batches: it is at the seq after the last
// acknowledged batch or after a later one, never torn, never behind.
uint64_t VerifyCheckpoint(const std::string& store_path, const std::set<uint64_t>& acked,
                          uint64_t first) {
  std::vector<uint64_t> seq_after;
  uint64_t present = Verify(store_path, acked, first);
  VerifyWholeBatches(store_path, &seq_after);
  auto store = Store::Open(store_path, Options{});
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;
  auto c = (*store)->GetCheckpoint("crash");
  if (acked.empty() && absl::IsNotFound(c.status())) return present;
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return present;
  const uint64_t floor = acked.empty() ? 0 : seq_after[*acked.rbegin()];
  EXPECT_GE(*c, floor);
  EXPECT_TRUE(std::find(seq_after.begin(), seq_after.end(), *c) != seq_after.end())
      << "checkpoint at " << *c << " is no batch's last seq";
  return present;
}

TEST(CrashPointTest, CheckpointCommit) {
  for (const char* point : {"checkpoint.before_write", "checkpoint.after_write"}) {
    KillAtPoint("checkpoint", point, kRunsPerPoint, 20, VerifyCheckpoint);
  }
}

// Sessions are all or nothing: every key holds the same session's document
// (or none does), the newest acknowledged session at least, and each
// committed session made exactly one version of each key.
uint64_t VerifySessions(const std::string& store_path, const std::set<uint64_t>& acked,
                        uint64_t first) {
  auto store = Store::Open(store_path, Options{});
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;
  std::set<uint64_t> seen;
  size_t absent = 0;
  for (int k = 0; k < kSessionKeys; ++k) {
    auto e = (*store)->Get("sess", SessionKey(k));
    if (absl::IsNotFound(e.status())) {
      ++absent;
      continue;
    }
    EXPECT_TRUE(e.ok()) << e.status();
    if (!e.ok()) return 0;
    const std::string tag = R"("session":)";
    size_t at = e->document.find(tag);
    EXPECT_NE(at, std::string::npos) << e->document;
    if (at == std::string::npos) return 0;
    seen.insert(std::stoull(e->document.substr(at + tag.size())));
  }
  EXPECT_TRUE(absent == 0 || absent == static_cast<size_t>(kSessionKeys)) << absent << " absent";
  EXPECT_LE(seen.size(), 1u) << "keys hold documents of different sessions";
  const uint64_t present = seen.empty() ? 0 : *seen.begin() + 1;
  for (int k = 0; k < kSessionKeys; ++k) {
    auto h = (*store)->History("sess", SessionKey(k), {});
    EXPECT_TRUE(h.ok()) << h.status();
    if (h.ok()) {
      EXPECT_EQ(h->size(), present) << "versions of " << SessionKey(k);
    }
  }
  uint64_t acked_end = acked.empty() ? 0 : *acked.rbegin() + 1;
  EXPECT_GE(present, acked_end);
  EXPECT_LE(present, std::max(acked_end, first) + 1);
  return present;
}

TEST(CrashPointTest, SessionCommit) {
  for (const char* point :
       {"exclusive.before_ingest", "exclusive.after_ingest", "session.after_commit"}) {
    KillAtPoint("session", point, kRunsPerPoint, 10, VerifySessions);
  }
}

// Under retention: the batches are a whole prefix (the seq counter is the
// fold's), the current state is the fold's, and every batch boundary still
// inside the window answers a snapshot exactly as the fold did at that seq.
uint64_t VerifyRetained(const std::string& store_path, const std::set<uint64_t>& acked,
                        uint64_t first, uint64_t* oldest_seen) {
  auto store = Store::Open(store_path, Options{});
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;
  const uint64_t last = (*store)->LastSeq();
  model::Model m;
  std::vector<uint64_t> seq_after;
  for (uint64_t b = 0; m.last_seq() < last && b < 1000000; ++b) {
    for (const model::ModelEvent& e : crash_check::MakeBatch(b)) m.Add(e);
    seq_after.push_back(m.last_seq());
  }
  EXPECT_EQ(m.last_seq(), last) << "the last seq is inside a batch";
  const uint64_t present = seq_after.size();
  const std::vector<model::EntityId> all = crash_check::AllEntities();
  for (const model::EntityId& id : all) {
    crash_check::ExpectCurrent(**store, id, m.Fold(id, std::nullopt, nullptr));
  }
  const uint64_t oldest = (*store)->Stats().oldest_seq;
  *oldest_seen = std::max(*oldest_seen, oldest);
  for (uint64_t n : seq_after) {
    if (n < oldest) continue;
    std::string want;
    for (const model::EntityId& id : all) {
      model::ModelState s = m.AtSeq(id, n);
      if (s.doc) want += model::EntityLine(id, s, true);
    }
    EXPECT_EQ(model::SnapshotText(**store, {.as_of_seq = n}, true), want) << "as of seq " << n;
  }
  uint64_t acked_end = acked.empty() ? 0 : *acked.rbegin() + 1;
  EXPECT_GE(present, acked_end);
  EXPECT_LE(present, std::max(acked_end, first) + 1);
  return present;
}

TEST(CrashPointTest, RetentionPurge) {
  uint64_t oldest_seen = 0;
  auto verify = [&](const std::string& path, const std::set<uint64_t>& acked, uint64_t first) {
    return VerifyRetained(path, acked, first, &oldest_seen);
  };
  KillAtPoint("retention", "retention.after_horizon", kRunsPerPoint, 30, verify);
  KillAtPoint("retention", "retention.purge", kRunsPerPoint, 200, verify);
  // The window moved: retention had something to purge.
  EXPECT_GT(oldest_seen, kRetainedCommits);
}

// A backup killed between its checkpoint and the backup proper: the store
// holds every acknowledged batch, the backups that completed are all there
// and sound (one per acknowledged batch), and the next backup clears what
// the killed one left in the data directory.
TEST(CrashPointTest, BackupCutShort) {
  int runs = 0;
  bool finished = false;
  auto verify = [&](const std::string& path, const std::set<uint64_t>& acked, uint64_t first) {
    const std::string backups = path + ".backups";
    runs++;
    uint64_t present = Verify(path, acked, first);
    auto listed = backup::List(backups);
    if (acked.empty()) return present;
    EXPECT_TRUE(listed.ok()) << listed.status();
    if (!listed.ok()) return present;
    EXPECT_EQ(listed->size(), acked.size());
    auto newest = backup::Verify(backups);
    EXPECT_TRUE(newest.ok()) << newest.status();
    EXPECT_TRUE(std::filesystem::exists(path + "/backup.tmp"));
    if (runs == kRunsPerPoint) {
      // After the last run: a backup that completes clears the leftover.
      auto store = Store::Open(path, Options{});
      EXPECT_TRUE(store.ok()) << store.status();
      if (!store.ok()) return present;
      auto b = (*store)->Backup(backups);
      EXPECT_TRUE(b.ok()) << b.status();
      if (b.ok()) {
        EXPECT_EQ(b->seq, (*store)->LastSeq());
      }
      EXPECT_FALSE(std::filesystem::exists(path + "/backup.tmp"));
      finished = true;
    }
    return present;
  };
  KillAtPoint("backup", "backup.after_checkpoint", kRunsPerPoint, 4, verify);
  EXPECT_TRUE(finished);
}

// A restore killed after its files are in <target>.restoring, before the
// rename: the store refuses to open at <target> (it is not the backup yet),
// and restoring again completes it.
TEST(CrashPointTest, RestoreCutShort) {
  TempDir dir;
  const std::string backups = dir.Sub("backups"), target = dir.Sub("restored");
  uint64_t seq = 0;
  {
    auto store = Store::Open(dir.Sub("live"), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    for (uint64_t b = 0; b < 50; ++b) {
      ASSERT_TRUE((*store)->Ingest(crash_check::BatchEvents(b), {}).ok());
    }
    auto b = (*store)->Backup(backups);
    ASSERT_TRUE(b.ok()) << b.status();
    seq = b->seq;
  }
  for (int run = 0; run < kRunsPerPoint; ++run) {
    SCOPED_TRACE(absl::StrCat("run ", run));
    pid_t pid = StartChild("restore", backups, target, 0, "restore.before_rename:0");
    ASSERT_GE(pid, 0) << "fork failed";
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child exited with " << WEXITSTATUS(status);
    EXPECT_TRUE(std::filesystem::exists(target + ".restoring"));
    auto refused = Store::Open(target, Options{});
    ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
    EXPECT_FALSE(std::filesystem::exists(target + "/CURRENT"));
    auto again = backup::Restore(backups, target);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_FALSE(std::filesystem::exists(target + ".restoring"));
    {
      auto store = Store::Open(target, Options{});
      ASSERT_TRUE(store.ok()) << store.status();
      EXPECT_EQ((*store)->LastSeq(), seq);
    }
    std::filesystem::remove_all(target);
  }
}

}  // namespace
}  // namespace cairn
