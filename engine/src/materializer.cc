// The materializer: one event folded into one entity's history, state,
// change feed and entity_seq (see store_impl.h's overview and README
// "Materialization"). ApplyToEntity runs the steps in order:
//
//   1. load the entity's state record (from the leader's StateCache when the
//      entity was written lately, else one point read);
//   2. FoldInOrder (the event is after the newest version: fold it onto the
//      state) or RefoldLate (insert it in position order and re-fold the
//      later versions up to the first upsert or delete);
//   3. EmitChange when the visible state changed: the next seq, a change
//      record and an entity_seq entry (a deleted previous entry linked to
//      it);
//   4. WriteEntity: a tombstone predecessor's link, the re-folded versions,
//      the new version, the new state.
//
// History and entity_seq are keyed newest first, so retention finds a
// record's successor without a link (retention.cc); only a tombstone, which
// retention drops when it sees no successor, gets one. Links (a version's
// next_timestamp, an entry's superseded_seq) are merge operands
// (retention.h), so no record is read or rewritten to set one.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "json_doc.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {

using records::Doc;

namespace {

// Folds one version (op, payload) onto the document before it.
absl::Status FoldVersion(Op op, const std::string& payload, const Doc& before, bool before_complete,
                         Doc* after, bool* complete) {
  switch (op) {
    case Op::kUpsert:
      *after = payload;
      *complete = true;
      return absl::OkStatus();
    case Op::kPatch: {
      CAIRN_ASSIGN_OR_RETURN(std::string merged,
                             json::ApplyMergePatch(before ? *before : "", payload));
      *after = std::move(merged);
      *complete = before ? before_complete : false;
      return absl::OkStatus();
    }
    default:
      *after = std::nullopt;
      *complete = true;
      return absl::OkStatus();
  }
}

}  // namespace

absl::Status StoreImpl::ApplyToEntity(std::string_view collection, std::string_view key_bytes,
                                      const std::string& entity, const VersionPos& at, Op op,
                                      const std::string& payload, bool snapshot, BatchState* bs,
                                      bool check_markers, const Event* logged) {
  EntityFold f{.collection = collection,
               .key_bytes = key_bytes,
               .entity = entity,
               .at = at,
               .op = op,
               .payload = payload,
               .snapshot = snapshot};
  const std::string* state_raw = use_state_cache_ ? state_cache_.Find(entity) : nullptr;
  std::optional<std::string> read;
  if (state_raw == nullptr) {
    CAIRN_ASSIGN_OR_RETURN(read, BatchGet(kState, entity));
    if (read) state_raw = &*read;
  }
  if (state_raw) {
    CAIRN_ASSIGN_OR_RETURN(f.state, records::DecodeState(*state_raw));
  }
  f.version.op = op;
  f.version.snapshot = snapshot;
  if (op == Op::kPatch) f.version.patch = payload;
  if (logged) {
    // The version records its event: no log record (its payload is the
    // version's after-image or patch, records::LoggedPayload).
    f.version.logged = true;
    f.version.raw = logged->raw;
    f.version.event_id = logged->event_id;
  }
  f.version_key = keys::HistoryKey(entity, at.position, at.source);
  f.next = f.state ? *f.state : records::StateValue{};
  // Retention may already have dropped an expired tombstone (the newest
  // version of a deleted entity, or its entity_seq entry): such a record is
  // not written back when it gets a successor.
  f.oldest_ts = horizon_.oldest_timestamp.load();
  f.oldest_seq = horizon_.oldest_seq.load();
  f.in_order = !f.state || VersionPos{f.state->position, f.state->source} < at;

  CAIRN_RETURN_IF_ERROR(f.in_order ? FoldInOrder(f) : RefoldLate(f));
  CAIRN_ASSIGN_OR_RETURN(uint64_t seq, EmitChange(f, bs));
  f.version.seq = seq;
  CAIRN_RETURN_IF_ERROR(WriteEntity(f));
  if (check_markers) {
    CAIRN_RETURN_IF_ERROR(EnforceMarkers(collection, key_bytes, entity, at, bs));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::FoldInOrder(EntityFold& f) {
  const std::optional<records::StateValue>& state = f.state;
  CAIRN_RETURN_IF_ERROR(FoldVersion(f.op, f.payload, state ? state->doc : std::nullopt,
                                    state ? state->complete : true, &f.version.after,
                                    &f.version.complete));
  if (state && !state->doc && state->position.timestamp >= f.oldest_ts) {
    // A tombstone predecessor (the newest version) gets its successor's
    // timestamp, merged into it, unless retention may have dropped it.
    f.pred_link = keys::HistoryKey(f.entity, state->position, state->source);
  }
  f.next.doc = f.version.after;
  f.next.complete = f.version.complete;
  f.next.position = f.at.position;
  f.next.source = f.at.source;
  return absl::OkStatus();
}

absl::Status StoreImpl::RefoldLate(EntityFold& f) {
  // Versions are keyed newest first: the one before the event is the next
  // key, the ones after it the keys before, in position order going back.
  rocksdb::ReadOptions ro;
  std::string upper = keys::PrefixSuccessor(f.entity);
  rocksdb::Slice lb(f.entity), ub(upper);
  ro.iterate_lower_bound = &lb;
  ro.iterate_upper_bound = &ub;
  std::unique_ptr<rocksdb::Iterator> it(
      batch_->NewIteratorWithBase(cfs_[kHistory], db_->NewIterator(ro, cfs_[kHistory])));
  Doc before;
  bool before_complete = true;
  it->Seek(f.version_key);
  if (it->Valid() && it->key().compare(f.version_key) == 0) {
    return absl::InternalError("history version exists for an event not logged");
  }
  if (it->Valid() && it->key().starts_with(f.entity)) {
    // The version before it, if any, is its base; a tombstone gets its
    // timestamp as a link.
    CAIRN_ASSIGN_OR_RETURN(records::VersionValue pred,
                           records::DecodeVersion(it->value().ToStringView()));
    before = pred.after;
    before_complete = pred.complete;
    if (!pred.after) f.pred_link = it->key().ToString();
  }
  CAIRN_RETURN_IF_ERROR(
      FoldVersion(f.op, f.payload, before, before_complete, &f.version.after, &f.version.complete));
  // Re-fold the later versions onto it while they are patches.
  Doc running = f.version.after;
  bool running_complete = f.version.complete;
  bool reached_end = true;
  bool first = true;
  for (it->SeekForPrev(f.version_key); it->Valid() && it->key().starts_with(f.entity); it->Prev()) {
    if (first) {
      // Its own successor's timestamp, in the version itself.
      if (!keys::HistorySuffixTimestamp(it->key().ToStringView().substr(f.entity.size()),
                                        &f.version.next_timestamp)) {
        return absl::DataLossError("malformed history key");
      }
      first = false;
    }
    CAIRN_ASSIGN_OR_RETURN(records::VersionValue later,
                           records::DecodeVersion(it->value().ToStringView()));
    if (later.op != Op::kPatch) {
      // Its after-image does not depend on what came before: stop here.
      running = later.after;
      running_complete = later.complete;
      reached_end = false;
      break;
    }
    Doc after;
    bool complete;
    CAIRN_RETURN_IF_ERROR(
        FoldVersion(later.op, later.patch, running, running_complete, &after, &complete));
    if (after != later.after || complete != later.complete) {
      later.after = after;
      later.complete = complete;
      f.rewrites.emplace_back(it->key().ToString(), later);
    }
    running = std::move(after);
    running_complete = complete;
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "scan history"));
  if (reached_end) {
    // Re-folded up to the newest version: the state follows.
    f.next.doc = running;
    f.next.complete = running_complete;
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> StoreImpl::EmitChange(EntityFold& f, BatchState* bs) {
  const std::optional<records::StateValue>& state = f.state;
  records::StateValue& next = f.next;
  // A change iff the visible state changed.
  bool existed = state && state->doc.has_value();
  bool changed = !state || next.doc != state->doc || next.complete != state->complete;
  if (!state && !next.doc) changed = false;  // deleting what never existed
  if (!changed) return bs->next_seq - 1;

  uint64_t seq = bs->next_seq++;
  records::ChangeValue change;
  change.collection = std::string(f.collection);
  change.key_bytes = std::string(f.key_bytes);
  change.op = !next.doc ? Op::kDelete : (f.op == Op::kPatch && existed ? Op::kPatch : Op::kUpsert);
  change.before = state ? state->doc : std::nullopt;
  change.after = next.doc;
  change.position = f.at.position;
  change.source = f.at.source;
  change.commit_micros = group_commit_micros_;
  change.complete = next.complete;
  CAIRN_RETURN_IF_ERROR(BatchPut(kChanges, keys::SeqKey(seq), records::Encode(change)));
  if (capture_) {
    CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(change.key_bytes));
    bs->changes.push_back({.seq = seq,
                           .collection = std::move(change.collection),
                           .key = std::move(key_json),
                           .op = change.op,
                           .before = change.before ? *std::move(change.before) : "",
                           .after = change.after ? *std::move(change.after) : "",
                           .position = change.position,
                           .source = std::move(change.source),
                           .complete = change.complete});
  }

  if (state && !state->doc && state->last_change_seq != 0 &&
      (state->last_change_seq >= f.oldest_seq || state->change_position.timestamp >= f.oldest_ts)) {
    // The previous entry (the state as of the last change) is superseded;
    // one of a deleted entity gets a link merged into it, unless retention
    // may have dropped it.
    CAIRN_RETURN_IF_ERROR(BatchMerge(
        kEntitySeq, keys::EntitySeqKey(f.entity, state->last_change_seq), LinkOperand(seq)));
  }
  // No copy of the document: while this entry is current it is the state's,
  // and once a change supersedes it, that change's before-image.
  records::EntitySeqValue entry{.complete = next.complete,
                                .position = next.position,
                                .source = next.source,
                                .by_reference = true,
                                .exists = next.doc.has_value()};
  CAIRN_RETURN_IF_ERROR(
      BatchPut(kEntitySeq, keys::EntitySeqKey(f.entity, seq), records::Encode(entry)));
  next.seq = seq;
  next.last_change_seq = seq;
  next.change_position = next.position;
  return seq;
}

absl::Status StoreImpl::WriteEntity(const EntityFold& f) {
  if (f.pred_link) {
    CAIRN_RETURN_IF_ERROR(BatchMerge(kHistory, *f.pred_link, LinkOperand(f.at.position.timestamp)));
  }
  for (const auto& [key, version] : f.rewrites) {
    CAIRN_RETURN_IF_ERROR(
        FromRocks(batch_->Put(cfs_[kHistory], key, records::Encode(version)), "put history"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(
      batch_->Put(cfs_[kHistory], f.version_key, records::Encode(f.version)), "put history"));
  std::string state = records::Encode(f.next);
  CAIRN_RETURN_IF_ERROR(FromRocks(batch_->Put(cfs_[kState], f.entity, state), "put state"));
  if (use_state_cache_) state_cache_.Put(f.entity, std::move(state), f.next.doc.has_value());
  return absl::OkStatus();
}

}  // namespace cairn::internal
