// Atomic sessions (Store::SessionIngest): whole events staged on disk over
// many posts and applied on commit as one batch, all or nothing, whatever
// its size. Order independence against plain ingest is in order_test.cc;
// here: commits far larger than one spill, truncates, restarts, discards,
// bad posts and mode mismatches.
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kT0 = 1700000000000000;

Event Upsert(const std::string& collection, uint64_t key, uint64_t ts, const std::string& body) {
  return Event{.source = "feed",
               .collection = collection,
               .key = absl::StrCat("\"k", key, "\""),
               .position = {ts, 0},
               .op = Op::kUpsert,
               .payload = absl::StrCat(R"({"v":)", ts, R"(,"body":")", body, R"("})")};
}

Event Truncate(const std::string& collection, uint64_t ts) {
  return Event{
      .source = "feed", .collection = collection, .position = {ts, 0}, .op = Op::kTruncate};
}

class AtomicSessionTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    auto s = Store::Open(dir_.path(), Options{});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    if (!store_->GetSource("feed").ok()) {
      ASSERT_TRUE(store_->PutSource({.name = "feed", .format = "canonical"}).ok());
    }
  }

  std::string Open() {
    auto id = store_->OpenSession("feed", "", SessionMode::kAtomic);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or("");
  }

  size_t Count(Store& store, const std::string& collection) {
    size_t n = 0;
    auto s = store.Snapshot({.collection = collection}, [&](const Entity&) {
      ++n;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s;
    return n;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(AtomicSessionTest, CommitOfManySpillsIsAllOrNothingAndLogsEveryEvent) {
  // ~70 MB of writes at commit (log, history, state, changes, entity_seq)
  // against an 8 MB spill: many spills. Events are posted in position order
  // with keys shuffled, so the log's key order (source, position) is not the
  // walk's entity order and the log gets one file per spill.
  constexpr uint64_t kEntities = 12000;
  std::vector<uint64_t> keys(kEntities);
  for (uint64_t i = 0; i < kEntities; ++i) keys[i] = i;
  std::mt19937 rng(7);
  std::shuffle(keys.begin(), keys.end(), rng);
  std::string body(500, 'x');
  std::vector<Event> all;
  for (int round = 0; round < 2; ++round) {
    for (uint64_t i = 0; i < kEntities; ++i) {
      all.push_back(Upsert("acct", keys[i], kT0 + round * kEntities + i + 1, body));
    }
  }
  std::string id = Open();
  for (size_t i = 0; i < all.size(); i += 1000) {
    std::vector<Event> post(all.begin() + i, all.begin() + std::min(all.size(), i + 1000));
    auto staged = store_->SessionIngest(id, std::move(post));
    ASSERT_TRUE(staged.ok()) << staged.status();
    EXPECT_EQ(*staged, std::min(all.size(), i + 1000));
  }
  EXPECT_EQ(store_->GetSession(id)->records, all.size());
  EXPECT_EQ(Count(*store_, "acct"), 0u);

  // A reader during the commit sees none of it or all of it.
  std::atomic<bool> done{false};
  std::atomic<int> partial{0}, reads{0};
  std::thread reader([&] {
    while (!done.load()) {
      size_t n = Count(*store_, "acct");
      if (n != 0 && n != kEntities) partial++;
      reads++;
    }
  });
  auto r = store_->CloseSession(id, /*commit=*/true);
  done = true;
  reader.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(partial.load(), 0) << "of " << reads.load() << " reads";
  EXPECT_EQ(r->applied, all.size());
  EXPECT_EQ(r->duplicates, 0u);
  EXPECT_EQ(r->first_seq, 1u);
  EXPECT_EQ(r->last_seq, all.size());  // every event changed its entity
  EXPECT_TRUE(r->outcomes.empty());
  EXPECT_EQ(store_->LastSeq(), all.size());
  EXPECT_EQ(Count(*store_, "acct"), kEntities);
  auto e = store_->Get("acct", absl::StrCat("\"k", keys[5], "\""));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_THAT(e->document, HasSubstr(absl::StrCat(R"({"v":)", kT0 + kEntities + 6)));
  auto h = store_->History("acct", absl::StrCat("\"k", keys[5], "\""), {});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ(h->at(1).before, h->at(0).after);

  // Every event is in the log, whichever spill file holds it: sent again,
  // all come back as duplicates, before and after a restart.
  auto resend = [&] {
    uint64_t duplicates = 0;
    for (size_t i = 0; i < all.size(); i += 5000) {
      std::vector<Event> batch(all.begin() + i, all.begin() + std::min(all.size(), i + 5000));
      auto again = store_->Ingest(std::move(batch), {});
      EXPECT_TRUE(again.ok()) << again.status();
      if (again.ok()) duplicates += again->duplicates;
    }
    return duplicates;
  };
  EXPECT_EQ(resend(), all.size());
  Reopen();
  EXPECT_EQ(resend(), all.size());
  EXPECT_EQ(Count(*store_, "acct"), kEntities);
  EXPECT_EQ(store_->LastSeq(), all.size());
}

TEST_F(AtomicSessionTest, TruncatesReachTheSameStateAsPlainIngest) {
  // The same seed and the same events, once as one Ingest batch and once
  // through an atomic session: truncates in two collections (one sent
  // twice), entities that existed before, new ones before and after a
  // truncate's position, and one collection left alone.
  std::vector<Event> seed;
  for (uint64_t k = 0; k < 6; ++k) {
    seed.push_back(Upsert("acct", k, kT0 + 10 + k, "seed"));
    seed.push_back(Upsert("item", k, kT0 + 10 + k, "seed"));
    seed.push_back(Upsert("other", k, kT0 + 10 + k, "seed"));
  }
  std::vector<Event> events = {
      Upsert("acct", 1, kT0 + 100, "before-truncate"),
      Truncate("acct", kT0 + 200),
      Upsert("acct", 2, kT0 + 300, "after-truncate"),
      Upsert("acct", 7, kT0 + 150, "new-before-truncate"),
      Upsert("acct", 8, kT0 + 250, "new-after-truncate"),
      Truncate("item", kT0 + 50),
      Truncate("acct", kT0 + 200),  // the same truncate again: a duplicate
      Upsert("item", 3, kT0 + 40, "late-before-truncate"),
      Upsert("item", 9, kT0 + 60, "new-after"),
      Upsert("other", 4, kT0 + 400, "untouched-collection"),
  };
  TempDir plain_dir;
  auto plain = Store::Open(plain_dir.path(), Options{});
  ASSERT_TRUE(plain.ok());
  ASSERT_TRUE((*plain)->Ingest(seed, {}).ok());
  auto want = (*plain)->Ingest(events, {});
  ASSERT_TRUE(want.ok()) << want.status();

  ASSERT_TRUE(store_->Ingest(seed, {}).ok());
  std::string id = Open();
  std::vector<Event> first(events.begin(), events.begin() + 4);
  std::vector<Event> rest(events.begin() + 4, events.end());
  ASSERT_TRUE(store_->SessionIngest(id, first).ok());
  ASSERT_TRUE(store_->SessionIngest(id, rest).ok());
  auto got = store_->CloseSession(id, /*commit=*/true);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->applied, want->applied);
  EXPECT_EQ(got->duplicates, want->duplicates);
  EXPECT_EQ(got->duplicates, 1u);

  auto text = [](Store& s, std::optional<Position> at) {
    std::string out;
    auto st = s.Snapshot({.as_of_position = at}, [&](const Entity& e) {
      absl::StrAppend(&out, e.collection, " ", e.key, " ", e.document, "\n");
      return true;
    });
    EXPECT_TRUE(st.ok()) << st;
    return out;
  };
  EXPECT_EQ(text(*store_, std::nullopt), text(**plain, std::nullopt));
  for (uint64_t at : {45, 120, 160, 220, 260, 350}) {
    SCOPED_TRACE(absl::StrCat("as of ", at));
    EXPECT_EQ(text(*store_, Position{kT0 + at, 0}), text(**plain, Position{kT0 + at, 0}));
  }
  // What the truncates did, spelled out: acct keeps only what came after.
  EXPECT_EQ(Count(*store_, "acct"), 2u);   // k2, k8
  EXPECT_EQ(Count(*store_, "item"), 1u);   // k9
  EXPECT_EQ(Count(*store_, "other"), 6u);  // untouched
  for (uint64_t k : {0, 1, 3, 7}) {
    EXPECT_TRUE(absl::IsNotFound(store_->Get("acct", absl::StrCat("\"k", k, "\"")).status()));
  }
  // Entities truncated before carry the truncate version at its position.
  auto h = store_->History("acct", "\"k0\"", {});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ(h->back().op, Op::kTruncate);
  EXPECT_EQ(h->back().position.timestamp, kT0 + 200);
}

TEST_F(AtomicSessionTest, StagedEventsSurviveARestartAndStayInvisible) {
  std::string id = Open();
  ASSERT_TRUE(store_->SessionIngest(id, {Upsert("acct", 1, kT0 + 1, "a")}).ok());
  Reopen();
  EXPECT_EQ(Count(*store_, "acct"), 0u);
  ASSERT_TRUE(store_->SessionIngest(id, {Upsert("acct", 2, kT0 + 2, "b")}).ok());
  EXPECT_EQ(store_->GetSession(id)->records, 2u);
  auto r = store_->CloseSession(id, true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->applied, 2u);
  EXPECT_EQ(Count(*store_, "acct"), 2u);
  // Closed: nothing more can be posted or committed.
  auto again = store_->SessionIngest(id, {Upsert("acct", 3, kT0 + 3, "c")});
  EXPECT_TRUE(absl::IsFailedPrecondition(again.status())) << again.status();
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->CloseSession(id, true).status()));
}

TEST_F(AtomicSessionTest, BadPostStagesNothingAndDiscardAppliesNothing) {
  std::string id = Open();
  ASSERT_TRUE(store_->SessionIngest(id, {Upsert("acct", 1, kT0 + 1, "a")}).ok());
  Event bad = Upsert("acct", 2, kT0 + 2, "b");
  bad.payload = "[1,2]";
  auto r = store_->SessionIngest(id, {Upsert("acct", 3, kT0 + 3, "c"), bad});
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("event 1"));
  EXPECT_EQ(store_->GetSession(id)->records, 1u);  // nothing of the bad post
  Event no_key = Upsert("acct", 4, kT0 + 4, "d");
  no_key.key.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(store_->SessionIngest(id, {no_key}).status()));

  auto closed = store_->CloseSession(id, /*commit=*/false);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(closed->applied, 0u);
  EXPECT_EQ(store_->LastSeq(), 0u);
  EXPECT_EQ(Count(*store_, "acct"), 0u);
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->CloseSession(id, true).status()));
}

TEST_F(AtomicSessionTest, ModesDoNotMix) {
  std::string atomic = Open();
  auto up = store_->SessionUpsert(atomic, {{.key = "\"k\"", .document = "{}"}});
  EXPECT_TRUE(absl::IsFailedPrecondition(up.status())) << up.status();
  EXPECT_THAT(std::string(up.status().message()), HasSubstr("atomic"));
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->SessionDelete(atomic, {"\"k\""}).status()));

  auto accrue = store_->OpenSession("feed", "acct", SessionMode::kAccrue);
  ASSERT_TRUE(accrue.ok());
  auto in = store_->SessionIngest(*accrue, {Upsert("acct", 1, kT0 + 1, "a")});
  EXPECT_TRUE(absl::IsFailedPrecondition(in.status())) << in.status();
  EXPECT_THAT(std::string(in.status().message()), HasSubstr("accrue"));
  // Other modes still need a collection.
  EXPECT_TRUE(
      absl::IsInvalidArgument(store_->OpenSession("feed", "", SessionMode::kAccrue).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->OpenSession("nope", "", SessionMode::kAtomic).status()));
}

}  // namespace
}  // namespace cairn
