// The materializer: one event folded into one entity's history, state,
// change feed and entity_seq (see store_impl.h's overview and README
// "Materialization").
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "json_doc.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {

using records::Doc;

absl::Status StoreImpl::ApplyToEntity(std::string_view collection, std::string_view key_bytes,
                                      const std::string& entity, const VersionPos& at, Op op,
                                      const std::string& payload, bool snapshot, BatchState* bs,
                                      bool check_markers) {
  const std::string state_key = entity;
  CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> state_raw, BatchGet(kState, state_key));
  std::optional<records::StateValue> state;
  if (state_raw) {
    CAIRN_ASSIGN_OR_RETURN(state, records::DecodeState(*state_raw));
  }

  // Folds one version onto (doc, complete).
  auto fold = [](Op vop, const std::string& vpayload, const Doc& before, bool before_complete,
                 Doc* after, bool* complete) -> absl::Status {
    switch (vop) {
      case Op::kUpsert:
        *after = vpayload;
        *complete = true;
        return absl::OkStatus();
      case Op::kPatch: {
        CAIRN_ASSIGN_OR_RETURN(std::string merged,
                               json::ApplyMergePatch(before ? *before : "", vpayload));
        *after = std::move(merged);
        *complete = before ? before_complete : false;
        return absl::OkStatus();
      }
      default:
        *after = std::nullopt;
        *complete = true;
        return absl::OkStatus();
    }
  };

  records::VersionValue nv;
  nv.op = op;
  nv.snapshot = snapshot;
  if (op == Op::kPatch) nv.patch = payload;
  const std::string new_key = keys::HistoryKey(entity, at.position, at.source);

  records::StateValue ns = state ? *state : records::StateValue{};
  ns.versions++;
  // Versions whose records must be rewritten, with their new values.
  std::vector<std::pair<std::string, records::VersionValue>> rewrites;

  // Retention may already have dropped an expired tombstone (the newest
  // version of a deleted entity, or its entity_seq entry): such a record is
  // not written back when it gets a successor.
  const uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  const uint64_t oldest_seq = horizon_.oldest_seq.load();
  VersionPos newest = state ? VersionPos{state->position, state->source} : VersionPos{};
  const bool in_order = !state || newest < at;
  if (in_order) {
    // In order: fold onto the current state.
    CAIRN_RETURN_IF_ERROR(fold(op, payload, state ? state->doc : std::nullopt,
                               state ? state->complete : true, &nv.after, &nv.complete));
    if (state && !state->newest_op) {
      // A state record written before it carried the newest version's
      // fields: read the predecessor back (this event's state has them).
      std::string pred_key = keys::HistoryKey(entity, state->position, state->source);
      CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> pred_raw, BatchGet(kHistory, pred_key));
      if (pred_raw) {
        CAIRN_ASSIGN_OR_RETURN(records::VersionValue pred, records::DecodeVersion(*pred_raw));
        pred.next_timestamp = at.position.timestamp;
        rewrites.emplace_back(std::move(pred_key), std::move(pred));
      }
    } else if (state && (state->doc || state->position.timestamp >= oldest_ts)) {
      // The predecessor is the newest version, rebuilt from the state record
      // instead of read back, and given its successor's timestamp.
      records::VersionValue pred{.op = *state->newest_op,
                                 .seq = state->newest_seq,
                                 .patch = state->newest_patch,
                                 .after = state->doc,
                                 .complete = state->complete,
                                 .snapshot = state->newest_snapshot,
                                 .next_timestamp = at.position.timestamp};
      rewrites.emplace_back(keys::HistoryKey(entity, state->position, state->source),
                            std::move(pred));
    }
    ns.doc = nv.after;
    ns.complete = nv.complete;
    ns.position = at.position;
    ns.source = at.source;
  } else {
    // Late: insert in order and re-fold the versions after it.
    rocksdb::ReadOptions ro;
    std::string upper = keys::PrefixSuccessor(entity);
    rocksdb::Slice ub(upper);
    ro.iterate_upper_bound = &ub;
    std::unique_ptr<rocksdb::Iterator> it(
        batch_->NewIteratorWithBase(cfs_[kHistory], db_->NewIterator(ro, cfs_[kHistory])));
    Doc before;
    bool before_complete = true;
    it->SeekForPrev(new_key);
    if (it->Valid() && it->key().starts_with(entity)) {
      CAIRN_ASSIGN_OR_RETURN(records::VersionValue pred,
                             records::DecodeVersion(it->value().ToStringView()));
      before = pred.after;
      before_complete = pred.complete;
      pred.next_timestamp = at.position.timestamp;
      rewrites.emplace_back(it->key().ToString(), std::move(pred));
    }
    CAIRN_RETURN_IF_ERROR(fold(op, payload, before, before_complete, &nv.after, &nv.complete));
    Doc running = nv.after;
    bool running_complete = nv.complete;
    bool reached_end = true;
    it->Seek(new_key);
    if (it->Valid() && it->key().compare(new_key) == 0) {
      return absl::InternalError("history version exists for an event not in the log");
    }
    bool first = true;
    for (; it->Valid() && it->key().starts_with(entity); it->Next()) {
      std::string_view rest = it->key().ToStringView().substr(entity.size());
      uint64_t ts = 0;
      keys::ConsumeU64(&rest, &ts);
      if (first) {
        nv.next_timestamp = ts;
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
          fold(later.op, later.patch, running, running_complete, &after, &complete));
      if (after != later.after || complete != later.complete) {
        later.after = after;
        later.complete = complete;
        rewrites.emplace_back(it->key().ToString(), later);
      }
      running = std::move(after);
      running_complete = complete;
    }
    CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "scan history"));
    if (reached_end) {
      ns.doc = running;
      ns.complete = running_complete;
    }
  }

  // A change iff the visible state changed.
  bool existed = state && state->doc.has_value();
  bool changed = !state || ns.doc != state->doc || ns.complete != state->complete;
  if (!state && !ns.doc) changed = false;  // deleting what never existed
  uint64_t seq = bs->next_seq - 1;
  if (changed) {
    seq = bs->next_seq++;
    records::ChangeValue c;
    c.collection = std::string(collection);
    c.key_bytes = std::string(key_bytes);
    c.op = !ns.doc ? Op::kDelete : (op == Op::kPatch && existed ? Op::kPatch : Op::kUpsert);
    c.before = state ? state->doc : std::nullopt;
    c.after = ns.doc;
    c.position = at.position;
    c.source = at.source;
    c.commit_micros = group_commit_micros_;
    c.complete = ns.complete;
    CAIRN_RETURN_IF_ERROR(BatchPut(kChanges, keys::SeqKey(seq), records::Encode(c)));
    if (capture_) {
      CAIRN_ASSIGN_OR_RETURN(std::string key_json, keys::KeyToJson(c.key_bytes));
      bs->changes.push_back({.seq = seq,
                             .collection = std::move(c.collection),
                             .key = std::move(key_json),
                             .op = c.op,
                             .before = c.before ? *std::move(c.before) : "",
                             .after = c.after ? *std::move(c.after) : "",
                             .position = c.position,
                             .source = std::move(c.source),
                             .complete = c.complete});
    }
    if (state && state->last_change_seq != 0 && !state->newest_op) {
      // Written before the state record carried the entry's position: read
      // the previous entry back.
      std::string prev_key = keys::EntitySeqKey(entity, state->last_change_seq);
      CAIRN_ASSIGN_OR_RETURN(std::optional<std::string> prev_raw, BatchGet(kEntitySeq, prev_key));
      if (prev_raw) {
        CAIRN_ASSIGN_OR_RETURN(records::EntitySeqValue prev, records::DecodeEntitySeq(*prev_raw));
        prev.superseded_seq = seq;
        CAIRN_RETURN_IF_ERROR(BatchPut(kEntitySeq, prev_key, records::Encode(prev)));
      }
    } else if (state && state->last_change_seq != 0 &&
               (state->doc || state->last_change_seq >= oldest_seq ||
                state->change_position.timestamp >= oldest_ts)) {
      // The previous entry holds the state as of the last change, which is
      // still the state's document and completeness (else there would have
      // been a change since): rebuilt, not read back, and marked superseded.
      records::EntitySeqValue prev{.doc = state->doc,
                                   .complete = state->complete,
                                   .position = state->change_position,
                                   .source = state->change_source,
                                   .superseded_seq = seq};
      CAIRN_RETURN_IF_ERROR(BatchPut(kEntitySeq, keys::EntitySeqKey(entity, state->last_change_seq),
                                     records::Encode(prev)));
    }
    records::EntitySeqValue es;
    es.doc = ns.doc;
    es.complete = ns.complete;
    es.position = ns.position;
    es.source = ns.source;
    CAIRN_RETURN_IF_ERROR(
        BatchPut(kEntitySeq, keys::EntitySeqKey(entity, seq), records::Encode(es)));
    ns.seq = seq;
    ns.last_change_seq = seq;
    ns.change_position = ns.position;
    ns.change_source = ns.source;
  }
  nv.seq = seq;
  if (in_order) {
    ns.newest_op = op;
    ns.newest_seq = seq;
    ns.newest_patch = op == Op::kPatch ? payload : "";
    ns.newest_snapshot = snapshot;
  }
  for (auto& [k, v] : rewrites) {
    CAIRN_RETURN_IF_ERROR(
        FromRocks(batch_->Put(cfs_[kHistory], k, records::Encode(v)), "put history"));
  }
  CAIRN_RETURN_IF_ERROR(
      FromRocks(batch_->Put(cfs_[kHistory], new_key, records::Encode(nv)), "put history"));
  CAIRN_RETURN_IF_ERROR(
      FromRocks(batch_->Put(cfs_[kState], state_key, records::Encode(ns)), "put state"));
  if (check_markers) {
    CAIRN_RETURN_IF_ERROR(EnforceMarkers(collection, key_bytes, entity, at, bs));
  }
  return absl::OkStatus();
}

}  // namespace cairn::internal
