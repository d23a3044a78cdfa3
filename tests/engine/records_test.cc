// The record codec (engine/src/records.h): every record round-trips field by
// field, and a stored value that was corrupted, cut short or belongs to
// another column family is DATA_LOSS, never a crash or a wrong value.
#include "records.h"

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "retention.h"

namespace cairn::records {
namespace {

using ::testing::HasSubstr;

LogValue SampleLog() {
  return {.op = Op::kPatch,
          .payload = R"({"a":1})",
          .raw = "raw bytes \x01\x02",
          .event_id = "evt-7",
          .snapshot = true,
          .seq = 42,
          .ingest_micros = 1700000000000001};
}

StateValue SampleState() {
  return {.doc = R"({"name":"x"})",
          .complete = false,
          .position = {1700000000000000, 3},
          .source = "billing",
          .seq = 9,
          .last_change_seq = 8,
          .change_position = {1700000000000000, 2}};
}

VersionValue SampleVersion() {
  return {.op = Op::kUpsert,
          .seq = 5,
          .patch = "",
          .after = R"({"v":2})",
          .complete = true,
          .snapshot = false,
          .next_timestamp = 1700000000000009};
}

ChangeValue SampleChange() {
  return {.collection = "account",
          .key_bytes = std::string("\x30\x80\0\0\0\0\0\0\x01", 9),
          .op = Op::kDelete,
          .before = R"({"v":1})",
          .after = std::nullopt,
          .position = {17, 4},
          .source = "billing",
          .commit_micros = 99,
          .complete = true};
}

// An update of a few fields of a larger document: its before-image is kept
// as a delta against the after-image (format 4).
ChangeValue SampleUpdate() {
  ChangeValue c = SampleChange();
  c.op = Op::kUpsert;
  c.before =
      R"({"acct_no":1003,"name":"Customer 00001003","email":"customer.00001003@example.com",)"
      R"("plan":"gold","status":"active","balance":1234.56,"currency":"EUR",)"
      R"("region":"eu-west-1","updated_at":"2023-11-14T22:13:20.000007Z"})";
  c.after = R"({"acct_no":1003,"name":"Customer 00001003","email":"customer.00001003@example.com",)"
            R"("plan":"basic","status":"active","balance":99.01,"currency":"EUR",)"
            R"("region":"eu-west-1","updated_at":"2023-11-14T22:15:00.000911Z"})";
  return c;
}

EntitySeqValue SampleEntitySeq() {
  return {.doc = std::nullopt,
          .complete = false,
          .position = {3, 1},
          .source = "crm",
          .superseded_seq = 77};
}

SessionValue SampleSession() {
  return {.source = "bbk",
          .collection = "country",
          .mode = SessionMode::kReplace,
          .state = SessionState::kCommitted,
          .opened_micros = 123,
          .records = 10,
          .applied = 9,
          .first_seq = 100,
          .last_seq = 108};
}

SourceDefinition SampleSource() {
  return {.name = "ogg",
          .format = "goldengate",
          .key_fields = {{"orders", {"ID", "LINE"}}},
          .collection_map = {{"SHOP.ORDERS", "orders"}},
          .default_collection = "misc",
          .json_schemas = {{"country", R"({"type":"object"})"}}};
}

TEST(RecordsTest, EveryRecordRoundTrips) {
  {
    LogValue in = SampleLog();
    auto out = DecodeLog(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->op, in.op);
    EXPECT_EQ(out->payload, in.payload);
    EXPECT_EQ(out->raw, in.raw);
    EXPECT_EQ(out->event_id, in.event_id);
    EXPECT_EQ(out->snapshot, in.snapshot);
    EXPECT_EQ(out->seq, in.seq);
    EXPECT_EQ(out->ingest_micros, in.ingest_micros);
  }
  {
    StateValue in = SampleState();
    auto out = DecodeState(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->doc, in.doc);
    EXPECT_EQ(out->complete, in.complete);
    EXPECT_EQ(out->position, in.position);
    EXPECT_EQ(out->source, in.source);
    EXPECT_EQ(out->seq, in.seq);
    EXPECT_EQ(out->last_change_seq, in.last_change_seq);
    EXPECT_EQ(out->change_position, in.change_position);
    auto peek = PeekState(Encode(in));
    ASSERT_TRUE(peek.has_value());
    EXPECT_FALSE(peek->deleted);
    EXPECT_EQ(peek->position, in.position);
    EXPECT_EQ(peek->last_change_seq, in.last_change_seq);
  }
  {
    // The state its last change left (the usual one): the change's seq and
    // position are the state's, not stored twice, and read back the same.
    StateValue in = SampleState();
    in.last_change_seq = in.seq;
    in.change_position = in.position;
    StateValue differs = SampleState();
    EXPECT_LT(Encode(in).size() + 16, Encode(differs).size());
    auto out = DecodeState(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->last_change_seq, in.seq);
    EXPECT_EQ(out->change_position, in.position);
    EXPECT_EQ(PeekState(Encode(in))->last_change_seq, in.seq);
  }
  {
    // A tombstone: no document.
    StateValue in = SampleState();
    in.doc.reset();
    auto out = DecodeState(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_FALSE(out->doc.has_value());
    EXPECT_TRUE(PeekState(Encode(in))->deleted);
  }
  {
    VersionValue in = SampleVersion();
    auto out = DecodeVersion(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->op, in.op);
    EXPECT_EQ(out->seq, in.seq);
    EXPECT_EQ(out->patch, in.patch);
    EXPECT_EQ(out->after, in.after);
    EXPECT_EQ(out->complete, in.complete);
    EXPECT_EQ(out->snapshot, in.snapshot);
    EXPECT_EQ(out->next_timestamp, in.next_timestamp);
    EXPECT_EQ(PeekVersionNext(Encode(in)), in.next_timestamp);
    in.next_timestamp = kNone;
    EXPECT_EQ(PeekVersionNext(Encode(in)), kNone);
  }
  {
    ChangeValue in = SampleChange();
    auto out = DecodeChange(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->collection, in.collection);
    EXPECT_EQ(out->key_bytes, in.key_bytes);
    EXPECT_EQ(out->op, in.op);
    EXPECT_EQ(out->before, in.before);
    EXPECT_EQ(out->after, in.after);
    EXPECT_EQ(out->position, in.position);
    EXPECT_EQ(out->source, in.source);
    EXPECT_EQ(out->commit_micros, in.commit_micros);
    EXPECT_EQ(out->complete, in.complete);
  }
  {
    EntitySeqValue in = SampleEntitySeq();
    auto out = DecodeEntitySeq(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->doc, in.doc);
    EXPECT_EQ(out->complete, in.complete);
    EXPECT_EQ(out->position, in.position);
    EXPECT_EQ(out->source, in.source);
    EXPECT_EQ(out->superseded_seq, in.superseded_seq);
    EXPECT_EQ(PeekEntitySeqSuperseded(Encode(in)), in.superseded_seq);
  }
  {
    SessionValue in = SampleSession();
    auto out = DecodeSession(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->source, in.source);
    EXPECT_EQ(out->collection, in.collection);
    EXPECT_EQ(out->mode, in.mode);
    EXPECT_EQ(out->state, in.state);
    EXPECT_EQ(out->opened_micros, in.opened_micros);
    EXPECT_EQ(out->records, in.records);
    EXPECT_EQ(out->applied, in.applied);
    EXPECT_EQ(out->first_seq, in.first_seq);
    EXPECT_EQ(out->last_seq, in.last_seq);
  }
  {
    StagedValue in{.op = Op::kDelete, .doc = ""};
    auto out = DecodeStaged(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->op, in.op);
    EXPECT_EQ(out->doc, in.doc);
  }
  {
    SourceDefinition in = SampleSource();
    auto out = DecodeSource(Encode(in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->name, in.name);
    EXPECT_EQ(out->format, in.format);
    EXPECT_EQ(out->key_fields, in.key_fields);
    EXPECT_EQ(out->collection_map, in.collection_map);
    EXPECT_EQ(out->default_collection, in.default_collection);
    EXPECT_EQ(out->json_schemas, in.json_schemas);
  }
}

// Each record's bytes, with a decoder that must verify them; it answers the
// decoded value encoded again, to compare what two buffers hold.
struct Kind {
  const char* name;
  std::string bytes;
  std::function<absl::StatusOr<std::string>(std::string_view)> decode;
};

template <typename Decode>
std::function<absl::StatusOr<std::string>(std::string_view)> Reencoding(Decode decode) {
  return [decode](std::string_view b) -> absl::StatusOr<std::string> {
    auto v = decode(b);
    if (!v.ok()) return v.status();
    return Encode(*v);
  };
}

std::vector<Kind> Kinds() {
  return {
      {"log", Encode(SampleLog()), Reencoding(DecodeLog)},
      {"state", Encode(SampleState()), Reencoding(DecodeState)},
      {"version", Encode(SampleVersion()), Reencoding(DecodeVersion)},
      {"change", Encode(SampleChange()), Reencoding(DecodeChange)},
      {"change by delta", Encode(SampleUpdate()), Reencoding(DecodeChange)},
      {"entity_seq", Encode(SampleEntitySeq()), Reencoding(DecodeEntitySeq)},
      {"session", Encode(SampleSession()), Reencoding(DecodeSession)},
      {"staged", Encode(StagedValue{.op = Op::kUpsert, .doc = "{}"}), Reencoding(DecodeStaged)},
      {"source", Encode(SampleSource()), Reencoding(DecodeSource)},
  };
}

TEST(RecordsTest, AnUpdatesBeforeImageIsADeltaAgainstItsAfterImage) {
  const ChangeValue update = SampleUpdate();
  const std::string bytes = Encode(update);
  // The before-image costs less than half its size (plain, it would cost all
  // of it and more).
  ChangeValue without = update;
  without.before = std::nullopt;
  EXPECT_LT(bytes.size(), Encode(without).size() + update.before->size() / 2) << bytes.size();
  auto out = DecodeChange(bytes);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->before, update.before);
  EXPECT_EQ(out->after, update.after);
  EXPECT_EQ(out->op, update.op);

  // A before-image with nothing in common with the after-image, and one too
  // small to pay: kept as they are, and read back the same.
  for (std::string before :
       {std::string(R"({"q":"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"})"),
        std::string(R"({"v":1})")}) {
    ChangeValue c = update;
    c.before = before;
    std::string plain = Encode(c);
    EXPECT_GT(plain.size(), update.after->size() + before.size());
    auto back = DecodeChange(plain);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->before, before);
  }

  // A delta decoded against another after-image does not pass for the
  // before-image: swapping in a different after-image of the same length
  // changes what decodes, or is refused.
  ChangeValue other = update;
  other.after = std::string(update.after->size(), 'x');
  std::string swapped = bytes;
  const size_t at = swapped.find(*update.after);
  ASSERT_NE(at, std::string::npos);
  swapped.replace(at, other.after->size(), *other.after);
  auto wrong = DecodeChange(swapped);
  if (wrong.ok()) {
    EXPECT_NE(wrong->before, update.before);
  } else {
    EXPECT_EQ(wrong.status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST(RecordsTest, TruncatedAndForeignRecordsAreDataLoss) {
  std::vector<Kind> kinds = Kinds();
  for (const Kind& k : kinds) {
    SCOPED_TRACE(k.name);
    EXPECT_EQ(k.decode("").status().code(), absl::StatusCode::kDataLoss);
    for (size_t n = 0; n < k.bytes.size(); ++n) {
      auto cut = k.decode(std::string_view(k.bytes).substr(0, n));
      if (n + 8 > k.bytes.size() && cut.ok()) {
        // Only alignment padding was cut (under 8 bytes at the end): the
        // same value, or nothing.
        EXPECT_EQ(*cut, *k.decode(k.bytes)) << "prefix of " << n << " bytes";
        continue;
      }
      EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss) << "prefix of " << n << " bytes";
    }
    // Another column family's record: the file identifier differs.
    for (const Kind& other : kinds) {
      // The same family (the first word of the name: "change", "change by
      // delta") reads its own records.
      auto family = [](const char* name) { return std::string_view(name).substr(0, 6); };
      if (family(other.name) == family(k.name)) continue;
      EXPECT_EQ(k.decode(other.bytes).status().code(), absl::StatusCode::kDataLoss)
          << other.name << " read as " << k.name;
    }
  }
}

TEST(RecordsTest, CorruptedBytesAreRefusedOrDecodeSafely) {
  // Flipping bytes may leave a buffer that still verifies (a changed
  // character inside a string); it must never crash, and anything the
  // verifier refuses is DATA_LOSS naming the record.
  std::mt19937_64 rng(17);
  for (const Kind& k : Kinds()) {
    SCOPED_TRACE(k.name);
    int refused = 0;
    for (int i = 0; i < 2000; ++i) {
      std::string bytes = k.bytes;
      for (int flips = 1 + static_cast<int>(rng() % 3); flips > 0; --flips) {
        bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
      }
      absl::Status s = k.decode(bytes).status();
      if (!s.ok()) {
        ++refused;
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
      }
    }
    // The verifier is doing its work: offsets and the identifier are most
    // of a small record's bytes.
    EXPECT_GT(refused, 100);
  }
  // The message names what did not verify.
  absl::Status s = DecodeState("not a flatbuffer at all").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("state"));
}

TEST(RecordsTest, PeeksOfCorruptedRecordsAreEmpty) {
  EXPECT_EQ(PeekVersionNext("garbage"), std::nullopt);
  EXPECT_EQ(PeekEntitySeqSuperseded("garbage"), std::nullopt);
  EXPECT_FALSE(PeekState("garbage").has_value());
  // A version's bytes peeked as an entity_seq record: the identifier differs.
  EXPECT_EQ(PeekEntitySeqSuperseded(Encode(SampleVersion())), std::nullopt);
}

TEST(RecordsTest, LinksAreSetWithoutChangingAnythingElse) {
  VersionValue v = SampleVersion();
  v.next_timestamp = kNone;
  // Format 5 stores no unset link: the first one re-encodes the record,
  // which then has the field, and the next one is set in place.
  auto first = SetVersionNext(Encode(v), 1700000000000001);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_GT(first->size(), Encode(v).size());
  auto linked = SetVersionNext(*first, 1700000000000077);
  ASSERT_TRUE(linked.ok()) << linked.status();
  EXPECT_EQ(linked->size(), first->size());  // set in place
  auto back = DecodeVersion(*linked);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->next_timestamp, 1700000000000077u);
  EXPECT_EQ(back->after, v.after);
  EXPECT_EQ(back->seq, v.seq);
  EXPECT_EQ(back->patch, v.patch);
  EXPECT_EQ(back->raw, v.raw);
  EntitySeqValue e = SampleEntitySeq();
  e.superseded_seq = kNone;
  auto superseded = SetEntitySeqSuperseded(Encode(e), 81);
  ASSERT_TRUE(superseded.ok()) << superseded.status();
  EXPECT_EQ(DecodeEntitySeq(*superseded)->superseded_seq, 81u);
  EXPECT_EQ(DecodeEntitySeq(*superseded)->doc, e.doc);
  EXPECT_EQ(SetVersionNext("garbage", 1).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(SetEntitySeqSuperseded(Encode(v), 1).status().code(), absl::StatusCode::kDataLoss);
}

TEST(RecordsTest, LinkMergeOperatorsTakeTheNewestLink) {
  using rocksdb::MergeOperator;
  for (internal::Cf cf : {internal::kHistory, internal::kEntitySeq}) {
    SCOPED_TRACE(internal::CfName(cf));
    auto op = internal::NewLinkMergeOperator(cf);
    std::string base =
        cf == internal::kHistory ? Encode(SampleVersion()) : Encode(SampleEntitySeq());
    rocksdb::Slice base_slice(base);
    std::string first = internal::LinkOperand(10), second = internal::LinkOperand(7);
    std::vector<rocksdb::Slice> operands = {first, second};
    std::string out;
    rocksdb::Slice existing;
    MergeOperator::MergeOperationOutput result(out, existing);
    ASSERT_TRUE(op->FullMergeV2(
        MergeOperator::MergeOperationInput("k", &base_slice, operands, nullptr), &result));
    uint64_t link = cf == internal::kHistory ? DecodeVersion(out)->next_timestamp
                                             : DecodeEntitySeq(out)->superseded_seq;
    EXPECT_EQ(link, 7u);  // the newest operand (a late insert moved it back)
    // Without a base (retention dropped an expired tombstone): a stub of a
    // deleted entity with the link.
    std::string stub;
    MergeOperator::MergeOperationOutput stub_result(stub, existing);
    ASSERT_TRUE(op->FullMergeV2(MergeOperator::MergeOperationInput("k", nullptr, operands, nullptr),
                                &stub_result));
    if (cf == internal::kHistory) {
      EXPECT_EQ(DecodeVersion(stub)->op, Op::kDelete);
      EXPECT_FALSE(DecodeVersion(stub)->after.has_value());
      EXPECT_EQ(DecodeVersion(stub)->next_timestamp, 7u);
    } else {
      EXPECT_FALSE(DecodeEntitySeq(stub)->doc.has_value());
      EXPECT_EQ(DecodeEntitySeq(stub)->superseded_seq, 7u);
    }
    std::string partial;
    EXPECT_TRUE(op->PartialMerge("k", first, second, &partial, nullptr));
    EXPECT_EQ(partial, second);
    // A corrupt operand or base fails the merge (the read reports it).
    std::vector<rocksdb::Slice> bad = {rocksdb::Slice("xyz")};
    std::string ignored;
    MergeOperator::MergeOperationOutput bad_result(ignored, existing);
    EXPECT_FALSE(op->FullMergeV2(MergeOperator::MergeOperationInput("k", &base_slice, bad, nullptr),
                                 &bad_result));
  }
}

}  // namespace
}  // namespace cairn::records
