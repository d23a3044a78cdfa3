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
#include "absl/time/clock.h"
#include "cairn/store.h"
#include "gtest/gtest.h"
#include "model.h"
#include "test_util.h"

namespace cairn {
namespace {

using model::EntityId;
using model::Json;
using model::ModelEvent;

constexpr uint64_t kT0 = 1700000000000000;
constexpr size_t kBatchEvents = 6;  // K: events per batch, distinct entities
constexpr int kCycles = 24;

// Batch `b`: K events on K distinct entities, at positions (kT0 + b, i), each
// carrying the batch id. A function of `b` alone, so the parent can rebuild
// every batch the child may have written.
std::vector<ModelEvent> MakeBatch(uint64_t b) {
  std::mt19937 rng(static_cast<uint32_t>(b * 7919 + 1));
  std::vector<EntityId> pool;
  for (const char* c : {"acct", "item"}) {
    for (size_t k = 0; k < model::Keys().size(); ++k) pool.push_back({c, k});
  }
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<ModelEvent> out;
  for (size_t i = 0; i < kBatchEvents; ++i) {
    ModelEvent e;
    e.source = "crash";
    e.entity = pool[i];
    e.position = {kT0 + b, i};
    uint32_t r = rng() % 10;
    if (r < 5) {
      e.op = Op::kUpsert;
      e.payload = Json::Object()
                      .Set("batch", Json::Number(std::to_string(b)))
                      .Set("i", Json::Number(std::to_string(i)))
                      .Set("pad", Json::String(std::string(64 + rng() % 64, 'p')));
    } else if (r < 9) {
      e.op = Op::kPatch;
      Json nested = Json::Object().Set("by", Json::Number(std::to_string(b)));
      e.payload = Json::Object().Set("batch", Json::Number(std::to_string(b))).Set("n", nested);
    } else {
      e.op = Op::kDelete;
    }
    e.spelling = rng();
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<EntityId> AllEntities() {
  std::vector<EntityId> out;
  for (const char* c : {"acct", "item"}) {
    for (size_t k = 0; k < model::Keys().size(); ++k) out.push_back({c, k});
  }
  return out;
}

// The child: ingest batches first, first+1, ... durably; after each ack,
// append its id to the side file and fsync it. Never returns. Uses only its
// own Store and plain syscalls (no gtest, no stdio buffers shared with the
// parent).
[[noreturn]] void ChildIngest(const std::string& store_path, const std::string& acks_path,
                              uint64_t first) {
  int fd = open(acks_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) _exit(3);
  auto store = Store::Open(store_path, Options{});
  if (!store.ok()) _exit(4);
  for (uint64_t b = first; b < first + 100000; ++b) {
    std::vector<Event> batch;
    for (const ModelEvent& e : MakeBatch(b)) batch.push_back(e.ToEvent());
    auto r = (*store)->Ingest(std::move(batch), {.durable = true});
    if (!r.ok() || r->applied != kBatchEvents) _exit(5);
    std::string line = absl::StrCat(b, "\n");
    if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(6);
    if (fsync(fd) != 0) _exit(7);
  }
  // Not reached in practice. Leave without running destructors (the child
  // runs before main; nothing of it needs tearing down).
  _exit(0);
}

// Set in the environment of the re-executed child: what ChildIngest needs.
constexpr const char* kChildEnv = "CAIRN_CRASH_TEST_CHILD";  // "<store>\n<acks>\n<first>"

// In a re-executed child, ingesting is all the binary does: once main has
// started (RocksDB's own static state is set up by then), before any test.
class ChildIngestEnvironment : public testing::Environment {
 public:
  void SetUp() override {
    std::string text = getenv(kChildEnv);
    size_t a = text.find('\n'), b = text.find('\n', a + 1);
    if (a == std::string::npos || b == std::string::npos) _exit(2);
    ChildIngest(text.substr(0, a), text.substr(a + 1, b - a - 1), std::stoull(text.substr(b + 1)));
  }
};
[[maybe_unused]] testing::Environment* const kChildEnvironment =
    getenv(kChildEnv) ? testing::AddGlobalTestEnvironment(new ChildIngestEnvironment) : nullptr;

// Starts the child: fork, then exec of this same binary with kChildEnv set.
pid_t StartChild(const std::string& store_path, const std::string& acks_path, uint64_t first) {
  // Everything the child needs is built before the fork: between fork and
  // exec it only calls async-signal-safe functions.
  std::string env = absl::StrCat(kChildEnv, "=", store_path, "\n", acks_path, "\n", first);
  char arg0[] = "engine_test";
  char* argv[] = {arg0, nullptr};
  char* envp[] = {env.data(), nullptr};
  pid_t pid = fork();
  if (pid != 0) return pid;
  execve("/proc/self/exe", argv, envp);
  _exit(8);
}

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
  auto store = Store::Open(store_path, Options{});
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;

  // Which events are visible, by batch (the position's timestamp).
  std::map<uint64_t, std::set<std::pair<EntityId, uint64_t>>> seen;
  std::map<EntityId, std::vector<Version>> histories;
  for (const EntityId& id : AllEntities()) {
    auto h = (*store)->History(id.collection, id.canonical_key(), {});
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) return 0;
    for (const Version& v : *h) {
      EXPECT_GE(v.position.timestamp, kT0);
      seen[v.position.timestamp - kT0].insert({id, v.position.tick});
    }
    histories[id] = *h;
  }
  uint64_t present = seen.empty() ? 0 : seen.rbegin()->first + 1;
  for (uint64_t b = 0; b < present; ++b) {
    SCOPED_TRACE(absl::StrCat("batch ", b));
    // All of the batch or nothing -- and batches are sequential in the child,
    // so every batch before the newest one present must be there in full.
    std::set<std::pair<EntityId, uint64_t>> want;
    for (const ModelEvent& e : MakeBatch(b)) want.insert({e.entity, e.position.tick});
    EXPECT_EQ(seen[b], want);
  }
  // Every acknowledged batch survived; the child wrote at most one beyond
  // them (committed, killed before its id was recorded).
  uint64_t acked_end = acked.empty() ? 0 : *acked.rbegin() + 1;
  EXPECT_GE(present, acked_end);
  EXPECT_LE(present, std::max(acked_end, first) + 1);
  for (uint64_t b : acked) EXPECT_LT(b, present);

  // State, history, seqs and counters are the fold of exactly those batches.
  model::Model m;
  for (uint64_t b = 0; b < present; ++b) {
    for (const ModelEvent& e : MakeBatch(b)) EXPECT_EQ(m.Add(e), Outcome::kApplied);
  }
  for (const EntityId& id : AllEntities()) {
    SCOPED_TRACE(absl::StrCat(id.collection, " ", id.canonical_key()));
    std::vector<model::ModelVersion> versions;
    model::ModelState s = m.Fold(id, std::nullopt, &versions);
    std::string want, got;
    for (const auto& v : versions) want += model::VersionLine(v);
    for (const Version& v : histories[id]) got += model::VersionLine(v);
    EXPECT_EQ(got, want);
    auto e = (*store)->Get(id.collection, id.canonical_key());
    if (s.doc) {
      EXPECT_TRUE(e.ok()) << e.status();
      if (e.ok()) {
        EXPECT_EQ(model::EntityLine(*e, true), model::EntityLine(id, s, true));
      }
    } else {
      EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound) << e.status();
    }
  }
  EXPECT_EQ((*store)->LastSeq(), m.last_seq());
  StoreStats stats = (*store)->Stats();
  EXPECT_EQ(stats.last_seq, m.last_seq());
  EXPECT_EQ(stats.sources["crash"].accepted, present * kBatchEvents);
  // The log holds the newest batch whole too: re-sent, every event of it is
  // a duplicate and nothing changes. (The child checks that the next batch
  // is not in the log: it requires all of it to be applied.)
  if (present > 0) {
    std::vector<Event> again;
    for (const ModelEvent& e : MakeBatch(present - 1)) again.push_back(e.ToEvent());
    auto r = (*store)->Ingest(std::move(again), {});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      EXPECT_EQ(r->duplicates, kBatchEvents);
    }
    EXPECT_EQ((*store)->LastSeq(), m.last_seq());
  }
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
    pid_t pid = StartChild(store_path, acks_path, next);
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

}  // namespace
}  // namespace cairn
