// Contribution sessions (DESIGN §6).
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cairn/status.h"
#include "crash_point.h"
#include "json_doc.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {

// Contribution sessions. Stream sessions ingest as records are posted.
// Accrue/replace sessions stage records in the staging CF (key: esc(session
// id) | canonical key; the last write of a key wins) and atomic sessions
// stage whole events (keys::AtomicEventKey); both fold at commit as one
// exclusive task in the writer queue (CommitExclusive: spilled to SST files
// and ingested in one step), so a commit of any size is all or nothing.

using keys::SessionKey;
using keys::StagingPrefix;

absl::StatusOr<records::SessionValue> StoreImpl::LoadSession(std::string_view id) {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], SessionKey(id), &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("unknown session '", AbslView(Excerpt(id)), "'"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get session"));
  return records::DecodeSession(v);
}

absl::StatusOr<records::SessionValue> StoreImpl::OpenSessionFor(std::string_view id) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue v, LoadSession(id));
  if (v.state != records::SessionState::kOpen) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", AbslView(id), "' is already closed (",
        v.state == records::SessionState::kCommitted ? "committed" : "discarded", ")"));
  }
  return v;
}

absl::Status StoreImpl::PutSession(std::string_view id, const records::SessionValue& v) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, cfs_[kMeta], SessionKey(id), records::Encode(v)), "put session");
}

absl::Status StoreImpl::DropStaging(std::string_view id) {
  std::string lower = StagingPrefix(id);
  return FromRocks(db_->DeleteRange(rocksdb::WriteOptions(), cfs_[kStaging], lower,
                                    keys::PrefixSuccessor(lower)),
                   "drop staging");
}

absl::Status StoreImpl::CleanClosedSessions() {
  // A crash between a session's commit (or discard) and the removal of its
  // staged records leaves them behind; the session record says which.
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(kMetaSessionPrefix); it->Valid() && it->key().starts_with(kMetaSessionPrefix);
       it->Next()) {
    CAIRN_ASSIGN_OR_RETURN(records::SessionValue v,
                           records::DecodeSession(it->value().ToStringView()));
    if (v.state != records::SessionState::kOpen) {
      CAIRN_RETURN_IF_ERROR(
          DropStaging(keys::MetaName(it->key().ToStringView(), kMetaSessionPrefix)));
    }
  }
  return FromRocks(it->status(), "scan sessions");
}

Position StoreImpl::NextSessionPosition(const std::string& source, uint64_t count) {
  absl::MutexLock l(&sessions_mu_);
  Position& last = session_positions_[source];
  uint64_t now = options_.now_micros();
  Position p = now > last.timestamp ? Position{now, 0} : Position{last.timestamp, last.tick};
  last = {p.timestamp, p.tick + count};
  return p;
}

absl::StatusOr<std::string> StoreImpl::OpenSession(std::string_view source,
                                                   std::string_view collection, SessionMode mode) {
  CAIRN_RETURN_IF_ERROR(GetSource(source).status());
  // An atomic session's events name their collections; one given is the
  // default for payloads whose format names none.
  if (mode != SessionMode::kAtomic || !collection.empty()) {
    CAIRN_RETURN_IF_ERROR(CheckName("session collection", collection));
  }
  if (mode != SessionMode::kStream && mode != SessionMode::kAccrue &&
      mode != SessionMode::kReplace && mode != SessionMode::kAtomic) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown session mode ", static_cast<int>(mode)));
  }
  // 128 random bits: an id cannot be guessed from another one.
  std::random_device rd;
  auto r64 = [&rd] { return (uint64_t{rd()} << 32) | rd(); };
  std::string id =
      absl::StrCat(absl::Hex(r64(), absl::kZeroPad16), absl::Hex(r64(), absl::kZeroPad16));
  records::SessionValue v;
  v.source = std::string(source);
  v.collection = std::string(collection);
  v.mode = mode;
  v.opened_micros = options_.now_micros();
  CAIRN_RETURN_IF_ERROR(PutSession(id, v));
  return id;
}

absl::Status StoreImpl::IngestForStreamSession(std::string_view session_id,
                                               std::vector<Event> events) {
  CAIRN_ASSIGN_OR_RETURN(IngestResult r, Ingest(std::move(events), {}));
  if (r.first_seq == 0) return absl::OkStatus();
  // Counted for the report on close. A crash between the ingest and this
  // write loses the count of that post, never the post.
  absl::MutexLock l(&sessions_mu_);
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, LoadSession(session_id));
  session.applied += r.applied;
  if (session.first_seq == 0) session.first_seq = r.first_seq;
  session.last_seq = std::max(session.last_seq, r.last_seq);
  return PutSession(session_id, session);
}

absl::StatusOr<std::vector<std::string>> StoreImpl::SessionUpsert(
    std::string_view session_id, std::vector<SessionRecord> records) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(session_id));
  if (session.mode == SessionMode::kAtomic) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", AbslView(session_id), "' is atomic: post whole events with SessionIngest"));
  }
  std::vector<std::string> key_bytes(records.size()), key_json(records.size());
  std::string errors;
  size_t bad = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    auto kb = keys::EncodeKey(records[i].key);
    auto doc = json::CanonicalObject(records[i].document);
    if (!kb.ok() || !doc.ok()) {
      absl::StrAppend(&errors, bad++ ? "; " : "", "record ", i, ": ",
                      !kb.ok() ? kb.status().message() : "document ",
                      !kb.ok() ? "" : doc.status().message());
      continue;
    }
    key_bytes[i] = *std::move(kb);
    key_json[i] = *keys::KeyToJson(key_bytes[i]);
    records[i].document = *std::move(doc);
  }
  if (bad) {
    return absl::InvalidArgumentError(
        absl::StrCat(bad, " of ", records.size(), " records rejected: ", errors));
  }
  std::vector<std::string> docs(records.size());
  for (size_t i = 0; i < records.size(); ++i) docs[i] = std::move(records[i].document);
  CAIRN_RETURN_IF_ERROR(
      StreamOrStage(session_id, std::move(session), Op::kUpsert, key_bytes, key_json, &docs));
  return key_json;
}

absl::StatusOr<std::vector<std::string>> StoreImpl::SessionDelete(std::string_view session_id,
                                                                  std::vector<std::string> ids) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(session_id));
  if (session.mode == SessionMode::kAtomic) {
    return absl::FailedPreconditionError(absl::StrCat(
        "session '", AbslView(session_id), "' is atomic: post whole events with SessionIngest"));
  }
  std::vector<std::string> key_bytes(ids.size()), key_json(ids.size());
  std::string errors;
  size_t bad = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto kb = keys::EncodeKey(ids[i]);
    if (!kb.ok()) {
      absl::StrAppend(&errors, bad++ ? "; " : "", "record ", i, ": ", kb.status().message());
      continue;
    }
    key_bytes[i] = *std::move(kb);
    key_json[i] = *keys::KeyToJson(key_bytes[i]);
  }
  if (bad) {
    return absl::InvalidArgumentError(
        absl::StrCat(bad, " of ", ids.size(), " records rejected: ", errors));
  }
  CAIRN_RETURN_IF_ERROR(
      StreamOrStage(session_id, std::move(session), Op::kDelete, key_bytes, key_json, nullptr));
  return key_json;
}

absl::Status StoreImpl::StreamOrStage(std::string_view session_id, records::SessionValue session,
                                      Op op, const std::vector<std::string>& key_bytes,
                                      const std::vector<std::string>& key_json,
                                      std::vector<std::string>* docs) {
  const size_t n = key_bytes.size();
  if (session.mode == SessionMode::kStream) {
    Position p = NextSessionPosition(session.source, n);
    std::vector<Event> events(n);
    for (size_t i = 0; i < n; ++i) {
      events[i] = Event{.source = session.source,
                        .collection = session.collection,
                        .key = key_json[i],
                        .position = {p.timestamp, p.tick + i},
                        .op = op,
                        .payload = docs ? std::move((*docs)[i]) : std::string()};
    }
    return IngestForStreamSession(session_id, std::move(events));
  }
  absl::MutexLock l(&sessions_mu_);
  CAIRN_ASSIGN_OR_RETURN(session, OpenSessionFor(session_id));
  rocksdb::WriteBatch wb;
  std::string prefix = StagingPrefix(session_id);
  for (size_t i = 0; i < n; ++i) {
    records::StagedValue sv{.op = op, .doc = docs ? std::move((*docs)[i]) : std::string()};
    CAIRN_RETURN_IF_ERROR(FromRocks(
        wb.Put(cfs_[kStaging], keys::StagingKey(session_id, key_bytes[i]), records::Encode(sv)),
        "stage"));
  }
  session.records += n;
  CAIRN_RETURN_IF_ERROR(
      FromRocks(wb.Put(cfs_[kMeta], SessionKey(session_id), records::Encode(session)), "stage"));
  return WriteResuming(rocksdb::WriteOptions(), &wb, "stage");
}

absl::Status StoreImpl::CommitSession(const std::string& id, const records::SessionValue& session,
                                      BatchState* bs, IngestResult* result) {
  // Staged keys and the collection's state share the canonical key order, so
  // a replace commit finds the records not re-sent with one merge pass.
  std::string prefix = StagingPrefix(id);
  std::string staging_upper = keys::PrefixSuccessor(prefix);
  rocksdb::ReadOptions sro;
  rocksdb::Slice sub(staging_upper);
  sro.iterate_upper_bound = &sub;
  std::unique_ptr<rocksdb::Iterator> staged(db_->NewIterator(sro, cfs_[kStaging]));
  staged->Seek(prefix);

  std::string coll_prefix = keys::CollectionPrefix(session.collection);
  std::string state_upper = keys::PrefixSuccessor(coll_prefix);
  rocksdb::ReadOptions ro;
  rocksdb::Slice ub(state_upper);
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> state;
  if (session.mode == SessionMode::kReplace) {
    state.reset(db_->NewIterator(ro, cfs_[kState]));
    state->Seek(coll_prefix);
  }
  Position base = NextSessionPosition(session.source, session.records + 1);
  uint64_t tick = 0;
  auto apply = [&](std::string_view key_bytes, Op op, std::string doc) -> absl::Status {
    CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(key_bytes));
    std::vector<Event> one(1);
    one[0] = Event{.source = session.source,
                   .collection = session.collection,
                   .key = std::move(key_json),
                   .position = {base.timestamp, base.tick + tick++},
                   .op = op,
                   .payload = std::move(doc)};
    std::vector<Prepared> prepared;
    CAIRN_RETURN_IF_ERROR(Validate(one, &prepared));
    CAIRN_RETURN_IF_ERROR(ApplyEvent(prepared[0], bs, result));
    // Between entities (never inside one), keep the batch small.
    if (spill_ && batch_->GetDataSize() > kSpillBatchBytes) return SpillBatch();
    return absl::OkStatus();
  };
  while (staged->Valid() || (state && state->Valid())) {
    std::string_view skey =
        staged->Valid() ? staged->key().ToStringView().substr(prefix.size()) : std::string_view();
    if (state && state->Valid()) {
      std::string_view ekey = state->key().ToStringView().substr(coll_prefix.size());
      if (!staged->Valid() || ekey < skey) {
        // Not re-sent: delete it if this source wrote it last and it exists.
        CAIRN_ASSIGN_OR_RETURN(records::StateValue sv,
                               records::DecodeState(state->value().ToStringView()));
        std::string k(ekey);
        state->Next();
        if (sv.doc && sv.source == session.source) {
          CAIRN_RETURN_IF_ERROR(apply(k, Op::kDelete, ""));
        }
        continue;
      }
      if (ekey == skey) state->Next();
    }
    CAIRN_ASSIGN_OR_RETURN(records::StagedValue v,
                           records::DecodeStaged(staged->value().ToStringView()));
    std::string k(skey);
    staged->Next();
    CAIRN_RETURN_IF_ERROR(apply(k, v.op, std::move(v.doc)));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(staged->status(), "scan staging"));
  if (state) CAIRN_RETURN_IF_ERROR(FromRocks(state->status(), "scan state"));
  records::SessionValue closed = session;
  closed.state = records::SessionState::kCommitted;
  return FromRocks(batch_->Put(cfs_[kMeta], SessionKey(id), records::Encode(closed)),
                   "close session");
}

absl::StatusOr<uint64_t> StoreImpl::SessionIngest(std::string_view session_id,
                                                  std::vector<Event> events) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(session_id));
  if (session.mode != SessionMode::kAtomic) {
    return absl::FailedPreconditionError(
        absl::StrCat("session '", AbslView(session_id), "' is a ", SessionModeName(session.mode),
                     " session: post its records with upsert and delete"));
  }
  std::vector<Prepared> prepared;
  CAIRN_RETURN_IF_ERROR(Prepare(events, &prepared));
  absl::MutexLock l(&sessions_mu_);
  CAIRN_ASSIGN_OR_RETURN(session, OpenSessionFor(session_id));
  rocksdb::WriteBatch wb;
  for (const Prepared& p : prepared) {
    const Event& e = p.event;
    uint64_t index = session.records++;
    std::string key = e.op == Op::kTruncate
                          ? keys::AtomicTruncateKey(session_id, index)
                          : keys::AtomicEventKey(session_id, p.entity, e.position, e.source, index);
    CAIRN_RETURN_IF_ERROR(
        FromRocks(wb.Put(cfs_[kStaging], key, records::EncodeStagedEvent(e)), "stage"));
  }
  CAIRN_RETURN_IF_ERROR(
      FromRocks(wb.Put(cfs_[kMeta], SessionKey(session_id), records::Encode(session)), "stage"));
  CAIRN_RETURN_IF_ERROR(WriteResuming(rocksdb::WriteOptions(), &wb, "stage"));
  return session.records;
}

namespace {

// The entities that exist (have a state record) in the collections an
// atomic commit truncates, in key order, read from the store as it was
// before the commit (nothing of the commit is in it until the end).
class TruncatedEntities {
 public:
  TruncatedEntities(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* state,
                    std::map<std::string, std::string> collections)  // prefix -> name
      : collections_(std::move(collections)), next_(collections_.begin()) {
    if (collections_.empty()) return;
    it_.reset(db->NewIterator(rocksdb::ReadOptions(), state));
    NextCollection();
  }

  bool Valid() const { return it_ && current_ != collections_.end() && it_->Valid(); }
  std::string_view entity() const { return it_->key().ToStringView(); }
  const std::string& collection() const { return current_->second; }
  size_t prefix_size() const { return current_->first.size(); }
  absl::Status status() const {
    return it_ ? FromRocks(it_->status(), "scan state") : absl::OkStatus();
  }

  void Next() {
    it_->Next();
    if (!it_->Valid() || !it_->key().starts_with(current_->first)) NextCollection();
  }

 private:
  // Moves to the first entity of the next truncated collection that has one.
  void NextCollection() {
    for (current_ = next_; current_ != collections_.end(); current_ = next_) {
      ++next_;
      it_->Seek(current_->first);
      if (it_->Valid() && it_->key().starts_with(current_->first)) return;
      if (!it_->status().ok()) return;
    }
  }

  std::map<std::string, std::string> collections_;
  std::map<std::string, std::string>::const_iterator current_, next_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

}  // namespace

absl::Status StoreImpl::CommitAtomic(const std::string& id, const records::SessionValue& session,
                                     BatchState* bs, IngestResult* result) {
  auto fold = [&](std::string_view staged) -> absl::Status {
    CAIRN_ASSIGN_OR_RETURN(Event e, records::DecodeStagedEvent(staged));
    std::vector<Event> one(1);
    one[0] = std::move(e);
    std::vector<Prepared> prepared;
    // Again: the retention horizon may have passed the event since it was
    // staged.
    if (absl::Status s = Validate(one, &prepared); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("staged ", s.message()));
    }
    return ApplyEvent(prepared[0], bs, result);
  };
  auto scan = [&] {
    return std::unique_ptr<rocksdb::Iterator>(
        db_->NewIterator(rocksdb::ReadOptions(), cfs_[kStaging]));
  };

  if (spill_) spill_->sort_log = true;
  // 1. The truncates, in the order posted: their markers and log entries.
  // Which entities they reach is decided in the walk below.
  bs->truncates_in_walk = true;
  std::string lower = keys::AtomicTruncatesPrefix(id);
  std::unique_ptr<rocksdb::Iterator> it = scan();
  for (it->Seek(lower); it->Valid() && it->key().starts_with(lower); it->Next()) {
    CAIRN_RETURN_IF_ERROR(fold(it->value().ToStringView()));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "scan staging"));
  std::map<std::string, std::vector<Marker>> markers;  // collection -> new markers
  std::map<std::string, std::string> truncated;        // collection prefix -> collection
  for (const auto& [collection, m] : bs->markers) {
    markers[collection].push_back(m);
    truncated[keys::CollectionPrefix(collection)] = collection;
  }

  // 2. Entity by entity in key order: the existing entities of a truncated
  // collection get the truncates' versions, then every entity its staged
  // events (whose folds add the versions of markers after them, as always).
  // Nothing reads an entity after the walk has left it, so the batch may be
  // spilled between entities.
  TruncatedEntities existing(db_.get(), cfs_[kState], std::move(truncated));
  std::string events_prefix = keys::AtomicEventsPrefix(id);
  it = scan();
  it->Seek(events_prefix);
  auto staged_entity = [&]() -> std::string_view {
    if (!it->Valid() || !it->key().starts_with(events_prefix)) return {};
    std::string_view rest = it->key().ToStringView().substr(events_prefix.size());
    return rest.substr(0, keys::EntityPrefixLength(rest));
  };
  while (true) {
    std::string_view staged = staged_entity();
    if (staged.empty() && !existing.Valid()) break;
    std::string entity(staged.empty() || (existing.Valid() && existing.entity() < staged)
                           ? existing.entity()
                           : staged);
    if (existing.Valid() && existing.entity() == entity) {
      std::string collection = existing.collection();
      std::string key_bytes = entity.substr(existing.prefix_size());
      for (const Marker& m : markers[collection]) {
        CAIRN_RETURN_IF_ERROR(ApplyToEntity(collection, key_bytes, entity, m.at, Op::kTruncate, "",
                                            false, bs, /*check_markers=*/false));
      }
      existing.Next();
    }
    for (; staged_entity() == entity; it->Next()) {
      CAIRN_RETURN_IF_ERROR(fold(it->value().ToStringView()));
    }
    // Counts only: a commit of any size keeps no per-event outcomes.
    result->outcomes.clear();
    if (spill_ && batch_->GetDataSize() > kSpillBatchBytes) CAIRN_RETURN_IF_ERROR(SpillBatch());
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "scan staging"));
  CAIRN_RETURN_IF_ERROR(existing.status());
  records::SessionValue closed = session;
  closed.state = records::SessionState::kCommitted;
  return FromRocks(batch_->Put(cfs_[kMeta], SessionKey(id), records::Encode(closed)),
                   "close session");
}

absl::StatusOr<IngestResult> StoreImpl::CloseSession(std::string_view session_id, bool commit) {
  std::string id(session_id);
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue session, OpenSessionFor(id));
  records::SessionValue closed = session;
  closed.state = commit ? records::SessionState::kCommitted : records::SessionState::kDiscarded;
  if (session.mode == SessionMode::kStream || !commit) {
    // Under the lock, re-read: a stream post may have just added its count.
    absl::MutexLock l(&sessions_mu_);
    CAIRN_ASSIGN_OR_RETURN(session, OpenSessionFor(id));
    closed = session;
    closed.state = commit ? records::SessionState::kCommitted : records::SessionState::kDiscarded;
    CAIRN_RETURN_IF_ERROR(PutSession(id, closed));
    CAIRN_RETURN_IF_ERROR(DropStaging(id));
    if (session.mode != SessionMode::kStream) return IngestResult{};
    // What the session's posts applied as they came.
    return IngestResult{
        .first_seq = session.first_seq, .last_seq = session.last_seq, .applied = session.applied};
  }
  Writer w;
  w.durable = true;
  w.commit_alone = true;
  w.task = [&](BatchState* bs, IngestResult* result) {
    // Re-check inside the queue: a concurrent close may have won.
    CAIRN_ASSIGN_OR_RETURN(records::SessionValue current, OpenSessionFor(id));
    return current.mode == SessionMode::kAtomic ? CommitAtomic(id, current, bs, result)
                                                : CommitSession(id, current, bs, result);
  };
  CAIRN_ASSIGN_OR_RETURN(IngestResult result, Enqueue(w));
  CrashPoint("session.after_commit");
  CAIRN_RETURN_IF_ERROR(DropStaging(id));
  return result;
}

absl::StatusOr<SessionInfo> StoreImpl::GetSession(std::string_view session_id) {
  CAIRN_ASSIGN_OR_RETURN(records::SessionValue v, LoadSession(session_id));
  return SessionInfo{.id = std::string(session_id),
                     .source = v.source,
                     .collection = v.collection,
                     .mode = v.mode,
                     .records = v.records};
}

}  // namespace cairn::internal
