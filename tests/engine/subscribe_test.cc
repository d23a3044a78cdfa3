// Subscriptions (DESIGN §4): a snapshot hand-off taken while two threads
// ingest continues with every later change, no gap and no duplicate, so the
// subscriber's reconstruction ends equal to the store; a subscriber that falls
// thousands of changes behind still receives all of them, in order, and is
// told when it has caught up.
#include <algorithm>
#include <atomic>
#include <climits>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "cairn/store.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using Kind = SubscriptionItem::Kind;
constexpr uint64_t kT0 = 1700000000000000;

// Holds writers before a given batch until the test lets them go on, so the
// test knows what is committed when it subscribes -- without stopping the
// writers while it does.
class Gate {
 public:
  // Blocks the caller while `batch` is outside the open range.
  void Pass(int batch) {
    absl::MutexLock l(&mu_);
    if (batch < open_until_) return;
    ++held_;
    cv_.SignalAll();
    while (batch >= open_until_) cv_.Wait(&mu_);
  }
  // Lets writers run batches below `batch`, which releases every held one.
  void OpenUntil(int batch) {
    absl::MutexLock l(&mu_);
    open_until_ = batch;
    held_ = 0;
    cv_.SignalAll();
  }
  // A writer is done (or failed): never wait for it at the gate again.
  void Leave() {
    absl::MutexLock l(&mu_);
    ++left_;
    cv_.SignalAll();
  }
  int held_or_left() {
    absl::MutexLock l(&mu_);
    return held_ + left_;
  }
  // Waits until `n` writers are held at the gate or gone.
  void AwaitHeld(int n) {
    absl::MutexLock l(&mu_);
    while (held_ + left_ < n) cv_.Wait(&mu_);
  }

 private:
  absl::Mutex mu_;
  absl::CondVar cv_;
  int open_until_ = INT_MAX;
  int held_ = 0;
  int left_ = 0;
};

// A writer thread's events: its own source, random entities of two
// collections, upserts, patches and deletes, in its own position order.
struct Writer {
  std::string source;
  uint32_t seed = 0;
  int batches = 0;
  Gate* gate = nullptr;
  std::vector<std::pair<uint64_t, uint64_t>> seq_ranges;  // per batch with changes

  void Run(Store& store) {
    std::mt19937 rng(seed);
    for (int b = 0; b < batches; ++b) {
      if (gate) gate->Pass(b);
      std::vector<Event> batch;
      for (uint32_t j = 0, n = 1 + rng() % 4; j < n; ++j) {
        Event e{.source = source,
                .collection = rng() % 2 ? "acct" : "item",
                .key = std::to_string(rng() % 40),
                .position = {kT0 + static_cast<uint64_t>(b), j}};
        uint32_t r = rng() % 10;
        if (r < 5) {
          e.payload = absl::StrCat(R"({"by":")", source, R"(","b":)", b, R"(,"j":)", j, "}");
        } else if (r < 8) {
          e.op = Op::kPatch;
          e.payload = absl::StrCat(R"({"patched":)", b, R"(,"j":null})");
        } else {
          e.op = Op::kDelete;
        }
        batch.push_back(std::move(e));
      }
      auto r = store.Ingest(std::move(batch), {});
      ASSERT_TRUE(r.ok()) << r.status();
      if (r->last_seq != 0) seq_ranges.emplace_back(r->first_seq, r->last_seq);
    }
  }
};

// What a subscriber knows: (collection, key) -> (document, complete).
using Reconstruction = std::map<std::pair<std::string, std::string>, std::pair<std::string, bool>>;

Reconstruction StoreContent(Store& store) {
  Reconstruction out;
  absl::Status s = store.Snapshot({}, [&](const Entity& e) {
    out[{e.collection, e.key}] = {e.document, e.complete};
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

// Applies a change after checking it continues the subscriber's state: its
// `before` is exactly what the subscriber holds (nothing missed, nothing
// applied twice).
void Apply(const Change& c, Reconstruction* state) {
  auto id = std::make_pair(c.collection, c.key);
  auto it = state->find(id);
  EXPECT_EQ(c.before, it == state->end() ? "" : it->second.first)
      << "change " << c.seq << " on " << c.collection << " " << c.key;
  if (c.after.empty()) {
    state->erase(id);
  } else {
    (*state)[id] = {c.after, c.complete};
  }
}

// Every batch's seq range, from all writers, tiles 1..last exactly.
void ExpectDenseSeqs(const std::vector<Writer>& writers, uint64_t last) {
  std::vector<std::pair<uint64_t, uint64_t>> all;
  for (const Writer& w : writers) all.insert(all.end(), w.seq_ranges.begin(), w.seq_ranges.end());
  std::sort(all.begin(), all.end());
  uint64_t next = 1;
  for (auto [first, l] : all) {
    EXPECT_EQ(first, next);
    next = l + 1;
  }
  EXPECT_EQ(next, last + 1);
}

// Runs writers on their own threads; joins them however the test ends.
class WriterThreads {
 public:
  WriterThreads(Store& store, std::vector<Writer>& writers) {
    for (Writer& w : writers) {
      threads_.emplace_back([&w, &store, this] {
        w.Run(store);
        if (w.gate) w.gate->Leave();
        ++done_;
      });
    }
  }
  ~WriterThreads() { Join(); }
  void Join() {
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  bool done() const { return done_.load() == threads_.size(); }

 private:
  std::vector<std::thread> threads_;
  std::atomic<size_t> done_{0};
};

// One subscriber's view of a snapshot hand-off.
struct HandOff {
  Reconstruction state;
  std::vector<Entity> snapshot;
  uint64_t hand_off = 0;  // N of kSnapshotEnd
  uint64_t last_delivered = 0;
  int changes = 0, caught_up = 0;
};

// Subscribes with Start::kSnapshot and follows the stream until the writers
// are done and everything committed has been delivered, checking the order
// of the items and that each change continues what the subscriber holds.
void FollowHandOff(Store& store, const WriterThreads& writers, HandOff* h) {
  auto sub = store.Subscribe({.start = SubscribeOptions::Start::kSnapshot});
  ASSERT_TRUE(sub.ok()) << sub.status();
  bool snapshot_done = false;
  uint64_t final_seq = UINT64_MAX;
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (h->last_delivered != final_seq) {
    ASSERT_LT(absl::Now(), deadline) << "stream stopped at " << h->last_delivered;
    if (writers.done() && final_seq == UINT64_MAX) final_seq = store.LastSeq();
    SubscriptionItem item;
    auto got = (*sub)->Next(absl::Milliseconds(50), &item);
    ASSERT_TRUE(got.ok()) << got.status();
    if (!*got) continue;
    switch (item.kind) {
      case Kind::kSnapshotEntity:
        ASSERT_FALSE(snapshot_done) << "snapshot entity after the snapshot's end";
        if (!h->snapshot.empty()) {
          const Entity& prev = h->snapshot.back();
          // Key order: collections, then integer keys by value.
          EXPECT_LT(std::make_pair(prev.collection, std::stoll(prev.key)),
                    std::make_pair(item.entity.collection, std::stoll(item.entity.key)));
        }
        h->snapshot.push_back(item.entity);
        h->state[{item.entity.collection, item.entity.key}] = {item.entity.document,
                                                               item.entity.complete};
        break;
      case Kind::kSnapshotEnd:
        ASSERT_FALSE(snapshot_done);
        snapshot_done = true;
        h->hand_off = h->last_delivered = item.seq;
        EXPECT_LE(h->hand_off, store.LastSeq());
        break;
      case Kind::kChange:
        ASSERT_TRUE(snapshot_done) << "change before the snapshot's end";
        // Consecutive from N + 1: the filter is empty, so no seq is skipped
        // and none is delivered twice.
        ASSERT_EQ(item.change.seq, h->last_delivered + 1) << "hand-off at " << h->hand_off;
        Apply(item.change, &h->state);
        h->last_delivered = item.change.seq;
        ++h->changes;
        break;
      case Kind::kCaughtUp:
        ASSERT_TRUE(snapshot_done);
        EXPECT_EQ(item.seq, h->last_delivered);  // caught up with what it delivered
        ++h->caught_up;
        break;
    }
  }
}

// A short-lived hand-off: the snapshot, then the changes right after it,
// each of which must continue the snapshot. Returns the changes checked.
int ProbeHandOff(Store& store) {
  auto sub = store.Subscribe({.start = SubscribeOptions::Start::kSnapshot});
  EXPECT_TRUE(sub.ok()) << sub.status();
  if (!sub.ok()) return 0;
  Reconstruction state;
  bool snapshot_done = false;
  uint64_t last = 0;
  int changes = 0;
  while (changes < 20) {
    SubscriptionItem item;
    auto got = (*sub)->Next(absl::Milliseconds(20), &item);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok() || !*got) break;  // the writers are held: done
    if (item.kind == Kind::kSnapshotEntity) {
      state[{item.entity.collection, item.entity.key}] = {item.entity.document,
                                                          item.entity.complete};
    } else if (item.kind == Kind::kSnapshotEnd) {
      snapshot_done = true;
      last = item.seq;
    } else if (item.kind == Kind::kChange) {
      EXPECT_TRUE(snapshot_done);
      EXPECT_EQ(item.change.seq, last + 1) << "first change after a hand-off at " << last;
      if (item.change.seq != last + 1) break;
      Apply(item.change, &state);
      last = item.change.seq;
      ++changes;
    }
  }
  return changes;
}

TEST(SubscribeTest, SnapshotHandOffWhileTwoThreadsIngest) {
  TempDir dir;
  auto opened = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;

  // The writers commit in stretches; in each, one subscriber that follows
  // the stream to the end hands off while they commit, and then short-lived
  // probes hand off again and again until the stretch ends. There is always
  // content before a hand-off and changes after it, and hundreds of
  // hand-offs race concurrent commits.
  constexpr int kFollowers = 4;
  constexpr int kStretch = 300;
  Gate gate;
  gate.OpenUntil(kStretch);
  std::vector<Writer> writers = {
      {.source = "w0", .seed = 1, .batches = kStretch * (kFollowers + 2), .gate = &gate},
      {.source = "w1", .seed = 2, .batches = kStretch * (kFollowers + 2), .gate = &gate}};
  std::vector<HandOff> handoffs(kFollowers);
  int probes = 0, probed_changes = 0;
  {
    WriterThreads threads(store, writers);
    std::vector<std::thread> followers;
    for (int i = 0; i <= kFollowers; ++i) {
      gate.AwaitHeld(2);
      gate.OpenUntil(i == kFollowers ? INT_MAX : kStretch * (i + 2));
      if (i < kFollowers) {
        followers.emplace_back(
            [&store, &threads, h = &handoffs[i]] { FollowHandOff(store, threads, h); });
      }
      while (gate.held_or_left() < 2 && !::testing::Test::HasFailure()) {
        probed_changes += ProbeHandOff(store);
        ++probes;
      }
    }
    for (auto& t : followers) t.join();
  }
  EXPECT_GT(probes, 50);
  EXPECT_GT(probed_changes, 50 * 10);
  ASSERT_FALSE(::testing::Test::HasFailure());
  const Reconstruction content = StoreContent(store);
  ExpectDenseSeqs(writers, store.LastSeq());
  for (const HandOff& h : handoffs) {
    SCOPED_TRACE(absl::StrCat("hand-off at ", h.hand_off));
    EXPECT_EQ(h.last_delivered, store.LastSeq());
    EXPECT_EQ(h.state, content);
    EXPECT_GE(h.caught_up, 1);
    EXPECT_GT(h.hand_off, 0u);
    EXPECT_GT(h.changes, 0);
    // The snapshot part is the store's repeatable snapshot as of N.
    std::vector<Entity> again;
    ASSERT_TRUE(store
                    .Snapshot({.as_of_seq = h.hand_off},
                              [&](const Entity& e) {
                                again.push_back(e);
                                return true;
                              })
                    .ok());
    ASSERT_EQ(again.size(), h.snapshot.size());
    for (size_t i = 0; i < again.size(); ++i) {
      EXPECT_EQ(again[i].key, h.snapshot[i].key);
      EXPECT_EQ(again[i].document, h.snapshot[i].document);
      EXPECT_EQ(again[i].seq, h.snapshot[i].seq);
    }
  }
}

TEST(SubscribeTest, SlowSubscriberReceivesEverythingInOrder) {
  TempDir dir;
  auto opened = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;
  auto sub = store.Subscribe({.start = SubscribeOptions::Start::kFromSeq, .from_seq = 0});
  ASSERT_TRUE(sub.ok()) << sub.status();
  Reconstruction state;
  uint64_t last_delivered = 0;
  std::vector<uint64_t> caught_up_at;
  // Reads until `stop()` and everything committed is delivered, pausing now
  // and then like a consumer with work to do.
  auto consume = [&](const std::function<bool()>& stop) {
    absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      SubscriptionItem item;
      auto got = (*sub)->Next(absl::Milliseconds(20), &item);
      ASSERT_TRUE(got.ok()) << got.status();
      if (!*got) {
        if (stop() && last_delivered == store.LastSeq()) return;
        continue;
      }
      if (item.kind == Kind::kCaughtUp) {
        EXPECT_EQ(item.seq, last_delivered);  // caught up with what it delivered
        caught_up_at.push_back(item.seq);
        continue;
      }
      ASSERT_EQ(item.kind, Kind::kChange);
      ASSERT_EQ(item.change.seq, last_delivered + 1);
      Apply(item.change, &state);
      last_delivered = item.change.seq;
      EXPECT_EQ((*sub)->position(), last_delivered);
      if (last_delivered % 100 == 0) absl::SleepFor(absl::Milliseconds(1));
    }
    ADD_FAILURE() << "subscription stopped at seq " << last_delivered << " of " << store.LastSeq();
  };

  // Thousands of changes are committed while the subscriber does not read.
  std::vector<Writer> first = {{.source = "w0", .seed = 3, .batches = 1200}};
  WriterThreads(store, first).Join();
  const uint64_t behind = store.LastSeq();
  ASSERT_GT(behind, 1000u);
  // Then it reads slowly while another writer goes on.
  std::vector<Writer> second = {{.source = "w1", .seed = 4, .batches = 1200}};
  {
    WriterThreads threads(store, second);
    consume([&] { return threads.done(); });
  }
  ASSERT_EQ(last_delivered, store.LastSeq());
  EXPECT_EQ(state, StoreContent(store));
  first.insert(first.end(), second.begin(), second.end());
  ExpectDenseSeqs(first, store.LastSeq());
  // Told it caught up only after reading the backlog.
  ASSERT_FALSE(caught_up_at.empty());
  EXPECT_GE(caught_up_at.front(), behind);

  // Caught up and idle: nothing to deliver until the next commit.
  SubscriptionItem item;
  auto idle = (*sub)->Next(absl::Milliseconds(20), &item);
  ASSERT_TRUE(idle.ok());
  EXPECT_FALSE(*idle);

  // Falling behind again (more than one read's worth) is followed by a new
  // marker once the backlog is delivered, right after its last change.
  std::vector<Event> burst;
  for (int i = 0; i < 700; ++i) {
    burst.push_back({.source = "w2",
                     .collection = "burst",
                     .key = std::to_string(i),
                     .position = {kT0, static_cast<uint64_t>(i)},
                     .payload = R"({"n":1})"});
  }
  auto r = store.Ingest(std::move(burst), {});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->last_seq - r->first_seq + 1, 700u);
  caught_up_at.clear();
  consume([] { return true; });
  ASSERT_EQ(last_delivered, r->last_seq);
  EXPECT_EQ(caught_up_at, std::vector<uint64_t>{r->last_seq});
  EXPECT_EQ(state, StoreContent(store));
}

// The store keeps the most recent changes decoded in memory (16,384 of
// them, 32 MiB at most) for subscribers near the head. One 20,000 changes
// (~40 MB) behind reads the oldest from the store, then crosses into the
// in-memory ones: every change arrives once, in order, with its exact
// before and after.
TEST(SubscribeTest, SubscriberBehindTheRecentChangesReadsTheStoreThenMemory) {
  TempDir dir;
  auto opened = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;
  auto sub = store.Subscribe({.start = SubscribeOptions::Start::kFromSeq, .from_seq = 0});
  ASSERT_TRUE(sub.ok()) << sub.status();
  constexpr int kEvents = 20'000;
  auto doc = [](int i) {
    return absl::StrCat(R"({"i":)", i, R"(,"pad":")", std::string(1000, 'a' + i % 26), R"("})");
  };
  for (int first = 0; first < kEvents; first += 500) {
    std::vector<Event> batch;
    for (int i = first; i < first + 500; ++i) {
      batch.push_back({.source = "s",
                       .collection = "c",
                       .key = std::to_string(i % 100),
                       .position = {1'000'000 + static_cast<uint64_t>(i), 0},
                       .payload = doc(i)});
    }
    auto r = store.Ingest(std::move(batch), {});
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->applied, 500u);
  }
  ASSERT_EQ(store.LastSeq(), static_cast<uint64_t>(kEvents));
  int next = 0;
  while (next < kEvents) {
    SubscriptionItem item;
    auto got = (*sub)->Next(absl::Seconds(5), &item);
    ASSERT_TRUE(got.ok() && *got) << "stuck after seq " << next;
    if (item.kind == Kind::kCaughtUp) continue;
    ASSERT_EQ(item.kind, Kind::kChange);
    ASSERT_EQ(item.change.seq, static_cast<uint64_t>(next + 1));
    EXPECT_EQ(item.change.key, std::to_string(next % 100));
    EXPECT_EQ(item.change.after, doc(next));
    EXPECT_EQ(item.change.before, next >= 100 ? doc(next - 100) : "");
    EXPECT_EQ(item.change.position.timestamp, 1'000'000u + next);
    ++next;
    if (::testing::Test::HasFailure()) break;
  }
}

// The sources filter means the same in the snapshot phase as for changes:
// an entity belongs to the source of its newest version (DESIGN §4).
TEST(SubscribeTest, SourcesFilterAppliesToTheSnapshotPhase) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  auto ev = [](std::string source, std::string key, uint64_t ts) {
    return Event{.source = std::move(source),
                 .collection = "c",
                 .key = std::move(key),
                 .position = {kT0 + ts, 0},
                 .payload = absl::StrCat(R"({"v":)", ts, "}")};
  };
  // "1": billing only; "2": billing then other (newest from other); "3": other.
  ASSERT_TRUE((*store)->Ingest({ev("billing", "1", 1), ev("billing", "2", 2)}, {}).ok());
  ASSERT_TRUE((*store)->Ingest({ev("other", "2", 3), ev("other", "3", 4)}, {}).ok());
  SubscribeOptions o{.start = SubscribeOptions::Start::kSnapshot};
  o.filter.sources = {"other"};
  auto sub = (*store)->Subscribe(o);
  ASSERT_TRUE(sub.ok()) << sub.status();
  std::vector<std::string> keys;
  for (;;) {
    SubscriptionItem item;
    auto got = (*sub)->Next(absl::Seconds(5), &item);
    ASSERT_TRUE(got.ok() && *got);
    if (item.kind == SubscriptionItem::Kind::kSnapshotEnd) break;
    ASSERT_EQ(item.kind, SubscriptionItem::Kind::kSnapshotEntity);
    EXPECT_EQ(item.entity.source, "other");
    keys.push_back(item.entity.key);
  }
  EXPECT_EQ(keys, (std::vector<std::string>{"2", "3"}));
}

}  // namespace
}  // namespace cairn
