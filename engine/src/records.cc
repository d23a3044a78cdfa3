#include "records.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "flatbuffers/flatbuffers.h"
#include "lz4.h"

namespace cairn::records {
namespace {

std::string Finish(flatbuffers::FlatBufferBuilder& b) {
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

flatbuffers::Offset<flatbuffers::String> OptString(flatbuffers::FlatBufferBuilder& b,
                                                   const Doc& d) {
  return d ? b.CreateString(*d) : 0;
}

std::string Str(const flatbuffers::String* s) {
  return s ? std::string(s->data(), s->size()) : std::string();
}

Doc OptDoc(const flatbuffers::String* s) {
  if (!s) return std::nullopt;
  return std::string(s->data(), s->size());
}

fbs::Op ToFbs(Op op) { return static_cast<fbs::Op>(op); }

absl::StatusOr<Op> FromFbs(fbs::Op op, const char* what) {
  switch (op) {
    case fbs::Op::Upsert:
    case fbs::Op::Patch:
    case fbs::Op::Delete:
    case fbs::Op::Truncate:
      return static_cast<Op>(op);
    default:
      return absl::DataLossError(absl::StrCat(what, " record has an unknown op"));
  }
}

template <typename T>
absl::StatusOr<const T*> Verified(std::string_view bytes, const char* identifier,
                                  const char* what) {
  flatbuffers::Verifier v(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (!v.VerifyBuffer<T>(identifier)) {
    return absl::DataLossError(
        absl::StrCat(what, " record does not verify (", bytes.size(), " bytes)"));
  }
  return flatbuffers::GetRoot<T>(bytes.data());
}

// Below this a before-image is kept as it is (a delta would not pay).
constexpr size_t kMinDeltaBytes = 32;

// A change's before-image as an LZ4 block with its after-image as the
// dictionary (fbs/change.fbs before_delta): true, with the block in *delta,
// when that saves more than the size field costs.
bool BeforeDelta(std::string_view before, std::string_view after, std::string* delta) {
  if (before.size() < kMinDeltaBytes || after.empty() || before.size() > INT32_MAX / 2 ||
      after.size() > INT32_MAX) {
    return false;
  }
  // One compression state per thread, reset (cheaply) per record.
  struct Stream {
    Stream() { LZ4_initStream(&state, sizeof state); }
    LZ4_stream_t state;
  };
  thread_local Stream stream;
  // The after-image becomes the dictionary by being compressed first (into
  // a scratch buffer): LZ4_loadDict would clear the whole 16 KiB state
  // first, which cost more than the compression itself.
  LZ4_resetStream_fast(&stream.state);
  const int dict = static_cast<int>(after.size());
  delta->resize(
      static_cast<size_t>(LZ4_compressBound(std::max(dict, static_cast<int>(before.size())))));
  if (LZ4_compress_fast_continue(&stream.state, after.data(), delta->data(), dict,
                                 static_cast<int>(delta->size()), /*acceleration=*/1) <= 0) {
    return false;
  }
  const int src = static_cast<int>(before.size());
  const int n = LZ4_compress_fast_continue(&stream.state, before.data(), delta->data(), src,
                                           static_cast<int>(delta->size()), /*acceleration=*/1);
  if (n <= 0 || static_cast<size_t>(n) + 8 >= before.size()) return false;
  delta->resize(static_cast<size_t>(n));
  return true;
}

// The inverse: DATA_LOSS unless the block decodes to exactly `size` bytes.
absl::StatusOr<std::string> ApplyBeforeDelta(const flatbuffers::Vector<uint8_t>& delta,
                                             uint32_t size, const flatbuffers::String* after) {
  // LZ4 expands a byte of its block to at most 255 bytes: a larger size is a
  // corrupted field, not an allocation to make.
  if (after == nullptr || size > 255 * static_cast<uint64_t>(delta.size()) + 64) {
    return absl::DataLossError("changes record has a malformed before-image delta");
  }
  std::string out(size, '\0');
  const int n = LZ4_decompress_safe_usingDict(
      reinterpret_cast<const char*>(delta.data()), out.data(), static_cast<int>(delta.size()),
      static_cast<int>(size), after->data(), static_cast<int>(after->size()));
  if (n < 0 || static_cast<uint32_t>(n) != size) {
    return absl::DataLossError("changes record's before-image delta does not decode");
  }
  return out;
}

// A verified change record's before-image, whichever way it is kept.
absl::StatusOr<Doc> BeforeOf(const fbs::ChangeRecord& p) {
  if (!p.before_delta()) return OptDoc(p.before());
  if (p.before()) return absl::DataLossError("changes record has two before-images");
  return ApplyBeforeDelta(*p.before_delta(), p.before_size(), p.after());
}

}  // namespace

std::string Encode(const LogValue& v) {
  flatbuffers::FlatBufferBuilder b(256 + v.payload.size() + v.raw.size());
  auto payload = b.CreateString(v.payload);
  auto raw = b.CreateVector(reinterpret_cast<const uint8_t*>(v.raw.data()), v.raw.size());
  auto id = v.event_id.empty() ? 0 : b.CreateString(v.event_id);
  fbs::LogRecordBuilder r(b);
  r.add_op(ToFbs(v.op));
  r.add_payload(payload);
  r.add_raw(raw);
  if (!v.event_id.empty()) r.add_event_id(id);
  r.add_snapshot(v.snapshot);
  r.add_seq(v.seq);
  r.add_ingest_micros(v.ingest_micros);
  b.Finish(r.Finish(), fbs::LogRecordIdentifier());
  return Finish(b);
}

std::string Encode(const StateValue& v) {
  flatbuffers::FlatBufferBuilder b(128 + (v.doc ? v.doc->size() : 0));
  auto doc = OptString(b, v.doc);
  auto source = b.CreateString(v.source);
  fbs::StateRecordBuilder r(b);
  if (v.doc) r.add_doc(doc);
  r.add_complete(v.complete);
  r.add_timestamp(v.position.timestamp);
  r.add_tick(v.position.tick);
  r.add_source(source);
  r.add_seq(v.seq);
  // Most states were left by their last change: then these equal `seq` and
  // the position, and are not stored.
  if (v.last_change_seq != v.seq) r.add_last_change_seq(v.last_change_seq);
  if (v.change_position != v.position) {
    r.add_change_timestamp(v.change_position.timestamp);
    r.add_change_tick(v.change_position.tick);
  }
  b.Finish(r.Finish(), fbs::StateRecordIdentifier());
  return Finish(b);
}

std::string Encode(const VersionValue& v) {
  flatbuffers::FlatBufferBuilder b(128 + v.patch.size() + (v.after ? v.after->size() : 0) +
                                   v.raw.size() + v.event_id.size());
  auto patch = v.patch.empty() ? 0 : b.CreateString(v.patch);
  auto after = OptString(b, v.after);
  auto raw = v.raw.empty()
                 ? 0
                 : b.CreateVector(reinterpret_cast<const uint8_t*>(v.raw.data()), v.raw.size());
  auto id = v.event_id.empty() ? 0 : b.CreateString(v.event_id);
  fbs::VersionRecordBuilder r(b);
  if (v.logged) {
    r.add_logged(true);
    if (!v.raw.empty()) r.add_raw(raw);
    if (!v.event_id.empty()) r.add_event_id(id);
  }
  r.add_op(ToFbs(v.op));
  r.add_seq(v.seq);
  if (!v.patch.empty()) r.add_patch(patch);
  if (v.after) r.add_after(after);
  r.add_complete(v.complete);
  r.add_snapshot(v.snapshot);
  // Stored only when set: a link merge into a record without it (only a
  // tombstone gets one) re-encodes the record (SetVersionNext).
  r.add_next_timestamp(v.next_timestamp);
  b.Finish(r.Finish(), fbs::VersionRecordIdentifier());
  return Finish(b);
}

std::string Encode(const ChangeValue& v) {
  std::string delta;
  const bool by_delta = v.before && v.after && BeforeDelta(*v.before, *v.after, &delta);
  flatbuffers::FlatBufferBuilder b(192 + (v.before ? v.before->size() : 0) +
                                   (v.after ? v.after->size() : 0));
  auto collection = b.CreateString(v.collection);
  auto key =
      b.CreateVector(reinterpret_cast<const uint8_t*>(v.key_bytes.data()), v.key_bytes.size());
  auto before = by_delta ? 0 : OptString(b, v.before);
  auto before_delta =
      by_delta ? b.CreateVector(reinterpret_cast<const uint8_t*>(delta.data()), delta.size()) : 0;
  auto after = OptString(b, v.after);
  auto source = b.CreateString(v.source);
  fbs::ChangeRecordBuilder r(b);
  r.add_collection(collection);
  r.add_key(key);
  r.add_op(ToFbs(v.op));
  if (by_delta) {
    r.add_before_delta(before_delta);
    r.add_before_size(static_cast<uint32_t>(v.before->size()));
  } else if (v.before) {
    r.add_before(before);
  }
  if (v.after) r.add_after(after);
  r.add_timestamp(v.position.timestamp);
  r.add_tick(v.position.tick);
  r.add_source(source);
  r.add_commit_micros(v.commit_micros);
  r.add_complete(v.complete);
  b.Finish(r.Finish(), fbs::ChangeRecordIdentifier());
  return Finish(b);
}

std::string Encode(const EntitySeqValue& v) {
  flatbuffers::FlatBufferBuilder b(128 + (v.doc ? v.doc->size() : 0));
  auto doc = OptString(b, v.doc);
  auto source = b.CreateString(v.source);
  fbs::EntitySeqRecordBuilder r(b);
  if (v.doc) r.add_doc(doc);
  r.add_complete(v.complete);
  r.add_timestamp(v.position.timestamp);
  r.add_tick(v.position.tick);
  r.add_source(source);
  r.add_superseded_seq(v.superseded_seq);  // as next_timestamp above
  if (v.by_reference) {
    r.add_by_reference(true);
    r.add_exists(v.exists);
  }
  b.Finish(r.Finish(), fbs::EntitySeqRecordIdentifier());
  return Finish(b);
}

absl::StatusOr<LogValue> DecodeLog(std::string_view bytes) {
  auto r = Verified<fbs::LogRecord>(bytes, fbs::LogRecordIdentifier(), "log");
  if (!r.ok()) return r.status();
  const fbs::LogRecord* p = *r;
  LogValue v;
  auto op = FromFbs(p->op(), "log");
  if (!op.ok()) return op.status();
  v.op = *op;
  v.payload = Str(p->payload());
  if (p->raw()) v.raw.assign(reinterpret_cast<const char*>(p->raw()->data()), p->raw()->size());
  v.event_id = Str(p->event_id());
  v.snapshot = p->snapshot();
  v.seq = p->seq();
  v.ingest_micros = p->ingest_micros();
  return v;
}

absl::StatusOr<StateValue> DecodeState(std::string_view bytes) {
  auto r = Verified<fbs::StateRecord>(bytes, fbs::StateRecordIdentifier(), "state");
  if (!r.ok()) return r.status();
  const fbs::StateRecord* p = *r;
  StateValue v;
  v.doc = OptDoc(p->doc());
  v.complete = p->complete();
  v.position = {p->timestamp(), p->tick()};
  v.source = Str(p->source());
  v.seq = p->seq();
  v.last_change_seq = p->last_change_seq().value_or(v.seq);
  v.change_position = {p->change_timestamp().value_or(v.position.timestamp),
                       p->change_tick().value_or(v.position.tick)};
  return v;
}

absl::StatusOr<VersionValue> DecodeVersion(std::string_view bytes) {
  auto r = Verified<fbs::VersionRecord>(bytes, fbs::VersionRecordIdentifier(), "history");
  if (!r.ok()) return r.status();
  const fbs::VersionRecord* p = *r;
  VersionValue v;
  auto op = FromFbs(p->op(), "history");
  if (!op.ok()) return op.status();
  v.op = *op;
  v.seq = p->seq();
  v.patch = Str(p->patch());
  v.after = OptDoc(p->after());
  v.complete = p->complete();
  v.snapshot = p->snapshot();
  v.next_timestamp = p->next_timestamp();
  v.logged = p->logged();
  if (p->raw()) v.raw.assign(reinterpret_cast<const char*>(p->raw()->data()), p->raw()->size());
  v.event_id = Str(p->event_id());
  return v;
}

absl::StatusOr<Doc> DecodeChangeBefore(std::string_view bytes) {
  auto r = Verified<fbs::ChangeRecord>(bytes, fbs::ChangeRecordIdentifier(), "changes");
  if (!r.ok()) return r.status();
  return BeforeOf(**r);
}

absl::StatusOr<ChangeValue> DecodeChange(std::string_view bytes) {
  auto r = Verified<fbs::ChangeRecord>(bytes, fbs::ChangeRecordIdentifier(), "changes");
  if (!r.ok()) return r.status();
  const fbs::ChangeRecord* p = *r;
  ChangeValue v;
  v.collection = Str(p->collection());
  if (p->key())
    v.key_bytes.assign(reinterpret_cast<const char*>(p->key()->data()), p->key()->size());
  auto op = FromFbs(p->op(), "changes");
  if (!op.ok()) return op.status();
  v.op = *op;
  auto before = BeforeOf(*p);
  if (!before.ok()) return before.status();
  v.before = *std::move(before);
  v.after = OptDoc(p->after());
  v.position = {p->timestamp(), p->tick()};
  v.source = Str(p->source());
  v.commit_micros = p->commit_micros();
  v.complete = p->complete();
  return v;
}

absl::StatusOr<EntitySeqValue> DecodeEntitySeq(std::string_view bytes) {
  auto r = Verified<fbs::EntitySeqRecord>(bytes, fbs::EntitySeqRecordIdentifier(), "entity_seq");
  if (!r.ok()) return r.status();
  const fbs::EntitySeqRecord* p = *r;
  EntitySeqValue v;
  v.doc = OptDoc(p->doc());
  v.complete = p->complete();
  v.position = {p->timestamp(), p->tick()};
  v.source = Str(p->source());
  v.superseded_seq = p->superseded_seq();
  v.by_reference = p->by_reference();
  v.exists = p->exists();
  return v;
}

std::string Encode(const SourceDefinition& v) {
  flatbuffers::FlatBufferBuilder b(256);
  std::vector<flatbuffers::Offset<fbs::CollectionKeys>> keys;
  for (const auto& [collection, fields] : v.key_fields) {
    keys.push_back(
        fbs::CreateCollectionKeys(b, b.CreateString(collection), b.CreateVectorOfStrings(fields)));
  }
  std::vector<flatbuffers::Offset<fbs::CollectionMapping>> mapping;
  for (const auto& [from, to] : v.collection_map) {
    mapping.push_back(fbs::CreateCollectionMapping(b, b.CreateString(from), b.CreateString(to)));
  }
  std::vector<flatbuffers::Offset<fbs::CollectionSchema>> schemas;
  for (const auto& [collection, schema] : v.json_schemas) {
    schemas.push_back(
        fbs::CreateCollectionSchema(b, b.CreateString(collection), b.CreateString(schema)));
  }
  auto root = fbs::CreateSourceRecord(
      b, b.CreateString(v.name), b.CreateString(v.format), b.CreateVector(keys),
      b.CreateVector(mapping), b.CreateString(v.default_collection), b.CreateVector(schemas));
  b.Finish(root, fbs::SourceRecordIdentifier());
  return Finish(b);
}

std::string Encode(const SessionValue& v) {
  flatbuffers::FlatBufferBuilder b(128);
  auto root = fbs::CreateSessionRecord(b, b.CreateString(v.source), b.CreateString(v.collection),
                                       static_cast<fbs::SessionMode>(v.mode),
                                       static_cast<fbs::SessionState>(v.state), v.opened_micros,
                                       v.records, v.applied, v.first_seq, v.last_seq);
  b.Finish(root, fbs::SessionRecordIdentifier());
  return Finish(b);
}

std::string Encode(const StagedValue& v) {
  flatbuffers::FlatBufferBuilder b(64 + v.doc.size());
  auto doc = v.op == Op::kUpsert ? b.CreateString(v.doc) : 0;
  fbs::StagedRecordBuilder r(b);
  r.add_op(ToFbs(v.op));
  if (v.op == Op::kUpsert) r.add_doc(doc);
  b.Finish(r.Finish(), fbs::StagedRecordIdentifier());
  return Finish(b);
}

std::string EncodeStagedEvent(const Event& e) {
  flatbuffers::FlatBufferBuilder b(128 + e.payload.size() + e.raw.size());
  auto doc = b.CreateString(e.payload);
  auto collection = b.CreateString(e.collection);
  auto key = b.CreateString(e.key);
  auto source = b.CreateString(e.source);
  auto raw = e.raw.empty() ? 0 : b.CreateString(e.raw);
  auto event_id = e.event_id.empty() ? 0 : b.CreateString(e.event_id);
  fbs::StagedRecordBuilder r(b);
  r.add_op(ToFbs(e.op));
  r.add_doc(doc);
  r.add_collection(collection);
  r.add_key(key);
  r.add_timestamp(e.position.timestamp);
  r.add_tick(e.position.tick);
  r.add_source(source);
  if (!e.raw.empty()) r.add_raw(raw);
  if (!e.event_id.empty()) r.add_event_id(event_id);
  r.add_snapshot(e.snapshot);
  b.Finish(r.Finish(), fbs::StagedRecordIdentifier());
  return Finish(b);
}

absl::StatusOr<Event> DecodeStagedEvent(std::string_view bytes) {
  auto r = Verified<fbs::StagedRecord>(bytes, fbs::StagedRecordIdentifier(), "staging");
  if (!r.ok()) return r.status();
  const fbs::StagedRecord* p = *r;
  auto op = FromFbs(p->op(), "staging");
  if (!op.ok()) return op.status();
  return Event{.source = Str(p->source()),
               .collection = Str(p->collection()),
               .key = Str(p->key()),
               .position = {p->timestamp(), p->tick()},
               .op = *op,
               .payload = Str(p->doc()),
               .snapshot = p->snapshot(),
               .event_id = Str(p->event_id()),
               .raw = Str(p->raw())};
}

absl::StatusOr<SourceDefinition> DecodeSource(std::string_view bytes) {
  auto r = Verified<fbs::SourceRecord>(bytes, fbs::SourceRecordIdentifier(), "source");
  if (!r.ok()) return r.status();
  const fbs::SourceRecord* p = *r;
  SourceDefinition v;
  v.name = Str(p->name());
  v.format = Str(p->format());
  if (p->key_fields()) {
    for (const auto* k : *p->key_fields()) {
      auto& fields = v.key_fields[Str(k->collection())];
      if (k->fields()) {
        for (const auto* f : *k->fields()) fields.push_back(Str(f));
      }
    }
  }
  if (p->collection_map()) {
    for (const auto* m : *p->collection_map()) v.collection_map[Str(m->from())] = Str(m->to());
  }
  v.default_collection = Str(p->default_collection());
  if (p->schemas()) {
    for (const auto* s : *p->schemas())
      v.json_schemas[Str(s->collection())] = Str(s->json_schema());
  }
  return v;
}

absl::StatusOr<SessionValue> DecodeSession(std::string_view bytes) {
  auto r = Verified<fbs::SessionRecord>(bytes, fbs::SessionRecordIdentifier(), "session");
  if (!r.ok()) return r.status();
  const fbs::SessionRecord* p = *r;
  if (p->mode() > fbs::SessionMode::MAX || static_cast<int>(p->state()) > 2) {
    return absl::DataLossError("session record has an unknown mode or state");
  }
  SessionValue v;
  v.source = Str(p->source());
  v.collection = Str(p->collection());
  v.mode = static_cast<SessionMode>(p->mode());
  v.state = static_cast<SessionState>(p->state());
  v.opened_micros = p->opened_micros();
  v.records = p->records();
  v.applied = p->applied();
  v.first_seq = p->first_seq();
  v.last_seq = p->last_seq();
  return v;
}

absl::StatusOr<StagedValue> DecodeStaged(std::string_view bytes) {
  auto r = Verified<fbs::StagedRecord>(bytes, fbs::StagedRecordIdentifier(), "staging");
  if (!r.ok()) return r.status();
  StagedValue v;
  auto op = FromFbs((*r)->op(), "staging");
  if (!op.ok()) return op.status();
  v.op = *op;
  v.doc = Str((*r)->doc());
  return v;
}

namespace {

// `bytes` (a record of type T) with one u64 field set: in place when the
// field is stored, else through the decoded value.
template <typename T, typename Decode, typename Set>
absl::StatusOr<std::string> WithField(std::string_view bytes, const char* identifier,
                                      const char* what, bool (T::*mutate)(uint64_t), uint64_t value,
                                      Decode decode, Set set) {
  CAIRN_RETURN_IF_ERROR(Verified<T>(bytes, identifier, what).status());
  std::string out(bytes);
  if ((flatbuffers::GetMutableRoot<T>(out.data())->*mutate)(value)) return out;
  auto v = decode(bytes);
  if (!v.ok()) return v.status();
  set(*v, value);
  return Encode(*v);
}

}  // namespace

absl::StatusOr<std::string> SetVersionNext(std::string_view bytes, uint64_t next_timestamp) {
  return WithField<fbs::VersionRecord>(
      bytes, fbs::VersionRecordIdentifier(), "history", &fbs::VersionRecord::mutate_next_timestamp,
      next_timestamp, DecodeVersion, [](VersionValue& v, uint64_t x) { v.next_timestamp = x; });
}

absl::StatusOr<std::string> SetEntitySeqSuperseded(std::string_view bytes,
                                                   uint64_t superseded_seq) {
  return WithField<fbs::EntitySeqRecord>(
      bytes, fbs::EntitySeqRecordIdentifier(), "entity_seq",
      &fbs::EntitySeqRecord::mutate_superseded_seq, superseded_seq, DecodeEntitySeq,
      [](EntitySeqValue& v, uint64_t x) { v.superseded_seq = x; });
}

std::optional<uint64_t> PeekVersionNext(std::string_view bytes) {
  auto r = Verified<fbs::VersionRecord>(bytes, fbs::VersionRecordIdentifier(), "history");
  if (!r.ok()) return std::nullopt;
  return (*r)->next_timestamp();
}

std::optional<StatePeek> PeekState(std::string_view bytes) {
  auto r = Verified<fbs::StateRecord>(bytes, fbs::StateRecordIdentifier(), "state");
  if (!r.ok()) return std::nullopt;
  const fbs::StateRecord* p = *r;
  return StatePeek{.deleted = p->doc() == nullptr,
                   .position = {p->timestamp(), p->tick()},
                   .last_change_seq = p->last_change_seq().value_or(p->seq())};
}

std::optional<uint64_t> PeekEntitySeqSuperseded(std::string_view bytes) {
  auto r = Verified<fbs::EntitySeqRecord>(bytes, fbs::EntitySeqRecordIdentifier(), "entity_seq");
  if (!r.ok()) return std::nullopt;
  return (*r)->superseded_seq();
}

}  // namespace cairn::records
