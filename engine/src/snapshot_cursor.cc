#include "snapshot_cursor.h"

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "config.h"
#include "key_codec.h"
#include "rocks_status.h"

namespace cairn::internal {

using records::Doc;

absl::StatusOr<ScanRange> SnapshotRange(const SnapshotOptions& o) {
  ScanRange r;
  if (o.collection.empty()) {
    if (!o.key_prefix.empty()) {
      return absl::InvalidArgumentError("key_prefix requires a collection");
    }
    return r;
  }
  r.lower = keys::CollectionPrefix(o.collection);
  if (!o.key_prefix.empty()) r.lower += keys::StringKeyPrefix(o.key_prefix);
  r.upper = keys::PrefixSuccessor(r.lower);
  return r;
}

Entity MakeEntity(std::string collection, std::string key_json, const Doc& doc, bool complete,
                  Position pos, std::string source, uint64_t seq) {
  Entity e;
  e.collection = std::move(collection);
  e.key = std::move(key_json);
  e.document = doc ? *doc : std::string();
  e.complete = complete;
  e.position = pos;
  e.source = std::move(source);
  e.seq = seq;
  return e;
}

absl::Status SplitEntity(std::string_view entity, std::string* collection, std::string* key_json) {
  std::string_view in = entity;
  if (!keys::ConsumeEscaped(&in, collection)) {
    return absl::DataLossError("malformed entity key");
  }
  CAIRN_ASSIGN_OR_RETURN(*key_json, keys::KeyToJson(in));
  return absl::OkStatus();
}
namespace {

class SnapshotCursorImpl : public SnapshotCursor {
 public:
  using Mode = SnapshotMode;

  // Entities are enumerated from `state` (one small record per entity, many
  // to a block); a point-in-time mode then does one Seek per entity in
  // `versions` (entity_seq or history, newest first). Enumerating from `versions`
  // itself would cost a second seek per entity, to skip the entity's other
  // versions, which lands on another block once an entity has many: with
  // the state CF the cost per entity stays one versions block whatever the
  // number of versions. Every entity with a version has a state record
  // (retention only drops a tombstone once its delete is older than every
  // answerable point, where the entity does not exist either).
  SnapshotCursorImpl(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* state,
                     rocksdb::ColumnFamilyHandle* versions, rocksdb::ColumnFamilyHandle* changes,
                     const rocksdb::Snapshot* snap, Mode mode, ScanRange range, uint64_t seq,
                     Position pos, bool include_incomplete, bool bulk)
      : db_(db),
        snap_(snap),
        mode_(mode),
        range_(std::move(range)),
        seq_(seq),
        pos_(pos),
        include_incomplete_(include_incomplete) {
    rocksdb::ReadOptions ro;
    ro.snapshot = snap_;
    if (mode_ != Mode::kCurrent) {
      // A whole collection (or store): entities come in key order, so each
      // entity's seek lands further along the same files; read them ahead in
      // large chunks rather than one block (one pread) per entity when the
      // cache does not hold them, and keep those blocks, each read once, out
      // of the block cache, where they would evict what ingest and point
      // reads use (and the index blocks every seek needs). A key-prefix
      // snapshot may be a handful of entities: plain reads, cached.
      rocksdb::ReadOptions vro = ro;
      if (bulk) {
        vro.readahead_size = kSnapshotReadahead;
        vro.fill_cache = false;
      }
      versions_.reset(db_->NewIterator(vro, versions));
      // Opened now, not per entity: an iterator keeps the files it started
      // on, so a change record compacted away while the scan runs (filters
      // ignore snapshots) is still found.
      if (mode_ == Mode::kAsOfSeq) changes_it_.reset(db_->NewIterator(ro, changes));
    }
    if (!range_.upper.empty()) {
      upper_slice_ = rocksdb::Slice(range_.upper);
      ro.iterate_upper_bound = &upper_slice_;
    }
    it_.reset(db_->NewIterator(ro, state));
    it_->Seek(range_.lower);
  }
  ~SnapshotCursorImpl() override {
    it_.reset();
    versions_.reset();
    changes_it_.reset();
    db_->ReleaseSnapshot(snap_);
  }

  absl::StatusOr<bool> Next() override {
    while (true) {
      if (!it_->Valid()) {
        CAIRN_RETURN_IF_ERROR(FromRocks(it_->status(), "snapshot scan"));
        return false;
      }
      CAIRN_ASSIGN_OR_RETURN(bool found, Step());
      if (found && (include_incomplete_ || entity_.complete)) return true;
    }
  }
  const Entity& entity() const override { return entity_; }
  uint64_t seq() const override { return seq_; }

 private:
  // Reads the entity at the state iterator and advances it.
  absl::StatusOr<bool> Step() {
    std::string_view key(it_->key().data(), it_->key().size());
    if (mode_ == Mode::kCurrent) {
      CAIRN_ASSIGN_OR_RETURN(records::StateValue s,
                             records::DecodeState(it_->value().ToStringView()));
      bool found = s.doc.has_value();
      if (found) CAIRN_RETURN_IF_ERROR(Fill(key, s.doc, s.complete, s.position, s.source, s.seq));
      it_->Next();
      return found;
    }
    size_t n = keys::EntityPrefixLength(key);
    if (n != key.size()) return absl::DataLossError("malformed key in snapshot scan");
    // An entity deleted at or before the point does not exist there: no
    // versions seek (a mostly-deleted collection then costs one state read
    // per tombstone, as the current state does).
    if (auto peek = records::PeekState(it_->value().ToStringView());
        peek && peek->deleted &&
        (mode_ == Mode::kAsOfSeq ? peek->last_change_seq <= seq_ : peek->position <= pos_)) {
      it_->Next();
      return false;
    }
    std::string entity(key);
    // As of a seq, a current entry's document is the state's.
    if (mode_ == Mode::kAsOfSeq) state_value_.assign(it_->value().data(), it_->value().size());
    it_->Next();
    // Versions and entries are keyed newest first: a Seek lands on the
    // newest one at or before the point.
    std::string target = mode_ == Mode::kAsOfSeq ? keys::EntitySeqKey(entity, seq_)
                                                 : keys::HistoryPositionPrefix(entity, pos_);
    versions_->Seek(target);
    if (!versions_->Valid()) {
      CAIRN_RETURN_IF_ERROR(FromRocks(versions_->status(), "snapshot seek"));
    }
    bool found = false;
    if (versions_->Valid() && versions_->key().starts_with(entity)) {
      std::string_view rest = versions_->key().ToStringView().substr(n);
      if (mode_ == Mode::kAsOfSeq) {
        CAIRN_ASSIGN_OR_RETURN(records::EntitySeqValue e,
                               records::DecodeEntitySeq(versions_->value().ToStringView()));
        uint64_t seq;
        if (!keys::ParseEntitySeqSuffix(rest, &seq)) {
          return absl::DataLossError("malformed entity_seq key");
        }
        found = !e.deleted();
        if (found && e.by_reference) {
          CAIRN_ASSIGN_OR_RETURN(e.doc, ReferencedDoc(e, entity, seq));
        }
        if (found)
          CAIRN_RETURN_IF_ERROR(Fill(entity, e.doc, e.complete, e.position, e.source, seq));
      } else {
        CAIRN_ASSIGN_OR_RETURN(records::VersionValue v,
                               records::DecodeVersion(versions_->value().ToStringView()));
        Position p;
        std::string source;
        if (!keys::ParseHistorySuffix(rest, &p, &source)) {
          return absl::DataLossError("malformed history key");
        }
        found = v.after.has_value();
        if (found)
          CAIRN_RETURN_IF_ERROR(Fill(entity, v.after, v.complete, p, std::move(source), v.seq));
      }
    }
    return found;
  }

  // The document of a format-2 entry (at `seq`) that says the entity
  // exists: the state's (at the snapshot) while nothing superseded it, else
  // the before-image of the superseding change, which retention keeps while
  // an answerable seq (>= the oldest) can land on this entry. The
  // superseding change is the entry's link when it has one (written before
  // format 5, or into a deleted entry), else the next newer entry: the key
  // before it (retention keeps that one while this one is answerable).
  // REQUIRES: versions_ is at the entry.
  absl::StatusOr<Doc> ReferencedDoc(const records::EntitySeqValue& e, std::string_view entity,
                                    uint64_t seq) {
    CAIRN_ASSIGN_OR_RETURN(records::StateValue s, records::DecodeState(state_value_));
    uint64_t superseded = e.superseded_seq;
    if (superseded == records::kNone && seq != s.last_change_seq) {
      versions_->Prev();
      if (!versions_->Valid() || !versions_->key().starts_with(entity) ||
          !keys::ParseEntitySeqSuffix(versions_->key().ToStringView().substr(entity.size()),
                                      &superseded)) {
        CAIRN_RETURN_IF_ERROR(FromRocks(versions_->status(), "read the superseding entry"));
        return absl::DataLossError(absl::StrCat("the entity_seq entry at seq ", seq,
                                                " is not current and nothing supersedes it"));
      }
    }
    if (superseded == records::kNone) return s.doc;
    std::string key = keys::SeqKey(superseded);
    changes_it_->Seek(key);
    if (!changes_it_->Valid() || changes_it_->key() != rocksdb::Slice(key)) {
      CAIRN_RETURN_IF_ERROR(FromRocks(changes_it_->status(), "read the superseding change"));
      return absl::DataLossError(absl::StrCat("the change at seq ", superseded,
                                              " an entity_seq entry refers to is missing"));
    }
    std::string_view v = changes_it_->value().ToStringView();
    return records::DecodeChangeBefore(v);
  }

  absl::Status Fill(std::string_view entity, const Doc& doc, bool complete, Position pos,
                    std::string source, uint64_t seq) {
    std::string collection, key_json;
    CAIRN_RETURN_IF_ERROR(SplitEntity(entity, &collection, &key_json));
    entity_ = MakeEntity(std::move(collection), std::move(key_json), doc, complete, pos,
                         std::move(source), seq);
    return absl::OkStatus();
  }

  rocksdb::DB* db_;
  const rocksdb::Snapshot* snap_;
  Mode mode_;
  ScanRange range_;
  rocksdb::Slice upper_slice_;
  uint64_t seq_;
  Position pos_;
  bool include_incomplete_;
  std::unique_ptr<rocksdb::Iterator> it_;          // state: the entities
  std::unique_ptr<rocksdb::Iterator> versions_;    // point-in-time modes
  std::unique_ptr<rocksdb::Iterator> changes_it_;  // as of a seq: superseded documents
  std::string state_value_;                        // as of a seq: the entity's state record
  Entity entity_;
};

}  // namespace

std::unique_ptr<SnapshotCursor> NewSnapshotCursor(
    rocksdb::DB* db, rocksdb::ColumnFamilyHandle* state, rocksdb::ColumnFamilyHandle* versions,
    rocksdb::ColumnFamilyHandle* changes, const rocksdb::Snapshot* snap, SnapshotMode mode,
    ScanRange range, uint64_t seq, Position pos, bool include_incomplete, bool bulk) {
  return std::make_unique<SnapshotCursorImpl>(db, state, versions, changes, snap, mode,
                                              std::move(range), seq, pos, include_incomplete, bulk);
}

}  // namespace cairn::internal
