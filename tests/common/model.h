// A reference model of DESIGN §2-§4 for the engine and crash tests: an independent,
// deliberately naive implementation (re-fold every entity from scratch, keep
// every state ever seen) that the store's incremental materializer is
// compared against. Nothing here shares code with engine/src.
#ifndef CAIRN_TESTS_COMMON_MODEL_H_
#define CAIRN_TESTS_COMMON_MODEL_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/event.h"
#include "cairn/store.h"

namespace cairn::model {

// A JSON value that keeps member order, as cairn does (documents are stored
// in the order the source wrote them; a merge patch appends new members).
// Strings are restricted to [a-z0-9_], so they never need escaping.
struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  std::string text;  // number text or string contents
  std::vector<Json> items;
  // A member: {first: name, second: value}. (Not a std::pair, whose traits
  // clang cannot check while Json is still incomplete.)
  struct Member;
  std::vector<Member> members;

  static Json Null();
  static Json Object();
  static Json Number(std::string text);
  static Json String(std::string text);
  static Json Bool(bool b);
  Json& Set(std::string name, Json value);
};

struct Json::Member {
  std::string first;
  Json second;
};

inline Json Json::Null() { return Json{}; }
inline Json Json::Object() {
  Json j;
  j.kind = Kind::kObject;
  return j;
}
inline Json Json::Number(std::string text) {
  Json j;
  j.kind = Kind::kNumber;
  j.text = std::move(text);
  return j;
}
inline Json Json::String(std::string text) {
  Json j;
  j.kind = Kind::kString;
  j.text = std::move(text);
  return j;
}
inline Json Json::Bool(bool b) {
  Json j;
  j.kind = Kind::kBool;
  j.boolean = b;
  return j;
}
inline Json& Json::Set(std::string name, Json value) {
  members.push_back({std::move(name), std::move(value)});
  return *this;
}

// Compact text, the form cairn stores; `spaced` adds the whitespace a
// hand-written input might have (cairn must store it compactly all the same).
inline void WriteJson(const Json& j, bool spaced, std::string* out) {
  const char* sep = spaced ? ", " : ",";
  switch (j.kind) {
    case Json::Kind::kNull:
      *out += "null";
      return;
    case Json::Kind::kBool:
      *out += j.boolean ? "true" : "false";
      return;
    case Json::Kind::kNumber:
      *out += j.text;
      return;
    case Json::Kind::kString:
      absl::StrAppend(out, "\"", j.text, "\"");
      return;
    case Json::Kind::kArray:
      *out += spaced ? "[ " : "[";
      for (size_t i = 0; i < j.items.size(); ++i) {
        if (i) *out += sep;
        WriteJson(j.items[i], spaced, out);
      }
      *out += spaced ? " ]" : "]";
      return;
    case Json::Kind::kObject:
      *out += spaced ? "{ " : "{";
      for (size_t i = 0; i < j.members.size(); ++i) {
        if (i) *out += sep;
        absl::StrAppend(out, "\"", j.members[i].first, spaced ? "\" : " : "\":");
        WriteJson(j.members[i].second, spaced, out);
      }
      *out += spaced ? " }" : "}";
      return;
  }
}

inline std::string ToText(const Json& j, bool spaced = false) {
  std::string out;
  WriteJson(j, spaced, &out);
  return out;
}

// RFC 7396, section 2, written from the RFC's pseudo-code.
inline void MergePatch(Json* target, const Json& patch) {
  if (patch.kind != Json::Kind::kObject) {
    *target = patch;
    return;
  }
  if (target->kind != Json::Kind::kObject) *target = Json::Object();
  for (const Json::Member& member : patch.members) {
    const std::string& name = member.first;
    const Json& value = member.second;
    auto it = std::find_if(target->members.begin(), target->members.end(),
                           [&](const auto& m) { return m.first == name; });
    if (value.kind == Json::Kind::kNull) {
      if (it != target->members.end()) target->members.erase(it);
      continue;
    }
    if (it != target->members.end()) {
      MergePatch(&it->second, value);
    } else {
      Json v;
      MergePatch(&v, value);
      target->members.push_back({name, std::move(v)});
    }
  }
}

// --- Random documents and patches. Few field names, so patches hit fields
// that exist; number texts that a double round trip would change.
inline Json RandomScalar(std::mt19937& rng) {
  static const char* kNumbers[] = {"0",
                                   "7",
                                   "-3",
                                   "1.50",
                                   "3.140000104904175",
                                   "1e3",
                                   "9007199254740993",
                                   "18446744073709551615"};
  static const char* kStrings[] = {"x", "y", "gold", "basic", "a_1"};
  switch (rng() % 4) {
    case 0:
    case 1:
      return Json::Number(kNumbers[rng() % std::size(kNumbers)]);
    case 2:
      return Json::String(kStrings[rng() % std::size(kStrings)]);
    default:
      return Json::Bool(rng() % 2);
  }
}

inline const char* RandomField(std::mt19937& rng) {
  static const char* kFields[] = {"a", "b", "c", "n", "plan"};
  return kFields[rng() % std::size(kFields)];
}

inline Json RandomValue(std::mt19937& rng, int depth);

// An object with distinct member names; `null_percent` of the values null.
inline Json RandomObject(std::mt19937& rng, int depth, int max_members, int null_percent) {
  Json obj = Json::Object();
  int n = 1 + static_cast<int>(rng() % max_members);
  for (int i = 0; i < n; ++i) {
    std::string name = RandomField(rng);
    bool taken = std::any_of(obj.members.begin(), obj.members.end(),
                             [&](const auto& m) { return m.first == name; });
    if (taken) continue;
    obj.Set(name,
            static_cast<int>(rng() % 100) < null_percent ? Json::Null() : RandomValue(rng, depth));
  }
  return obj;
}

inline Json RandomValue(std::mt19937& rng, int depth) {
  uint32_t r = rng() % 10;
  if (depth > 0 && r < 3) return RandomObject(rng, depth - 1, 3, 20);
  if (r == 3) {
    Json arr;
    arr.kind = Json::Kind::kArray;
    for (uint32_t i = rng() % 3; i > 0; --i) arr.items.push_back(RandomScalar(rng));
    return arr;
  }
  return RandomScalar(rng);
}

// A whole document for an upsert: may hold null members and nested objects.
inline Json RandomDocument(std::mt19937& rng) { return RandomObject(rng, 2, 4, 10); }

// A merge patch: removals (null), nested objects (which may themselves remove
// members) and plain replacements.
inline Json RandomPatch(std::mt19937& rng) {
  Json patch = Json::Object();
  int n = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < n; ++i) {
    std::string name = RandomField(rng);
    bool taken = std::any_of(patch.members.begin(), patch.members.end(),
                             [&](const auto& m) { return m.first == name; });
    if (taken) continue;
    uint32_t r = rng() % 10;
    if (r < 3) {
      patch.Set(name, Json::Null());
    } else if (r < 6) {
      patch.Set(name, RandomObject(rng, 1, 3, 35));
    } else {
      patch.Set(name, RandomValue(rng, 1));
    }
  }
  return patch;
}

// --- Entities. Keys are listed in the store's canonical key order (integers
// by value, then other numbers, then strings, then composite keys by field),
// each with the spellings a source might send.
struct KeySpec {
  std::string canonical;
  std::vector<std::string> spellings;
};

inline const std::vector<KeySpec>& Keys() {
  static const std::vector<KeySpec> keys = {
      {"-5", {"-5", " -5"}},
      {"3", {"3", "3 "}},
      {"12", {"12"}},
      {"1.5", {"1.5"}},
      {"\"a1\"", {"\"a1\"", " \"a1\" "}},
      {"\"b2\"", {"\"b2\""}},
      {R"({"a":"x","b":1})",
       {R"({"a":"x","b":1})", R"({"b":1,"a":"x"})", R"({ "b" : 1 , "a" : "x" })"}},
      {R"({"a":"x","b":2})", {R"({"b":2,"a":"x"})"}},
      {R"({"a":"y","b":0})", {R"({"a":"y","b":0})", R"({"b":0, "a":"y"})"}},
  };
  return keys;
}

struct EntityId {
  std::string collection;
  size_t key = 0;  // index into Keys(), so ids sort in the store's order
  auto operator<=>(const EntityId&) const = default;
  const std::string& canonical_key() const { return Keys()[key].canonical; }
};

// The collections the tests' entities live in, and every entity: each
// collection with each of Keys().
inline constexpr const char* kCollections[] = {"acct", "item"};

inline std::vector<EntityId> AllEntities() {
  std::vector<EntityId> out;
  for (const char* c : kCollections) {
    for (size_t k = 0; k < Keys().size(); ++k) out.push_back({c, k});
  }
  return out;
}

// One event as the model sees it, and how it is sent to the store.
struct ModelEvent {
  std::string source;
  EntityId entity;
  Position position;
  Op op = Op::kUpsert;
  Json payload;  // upsert / patch
  bool snapshot = false;
  size_t spelling = 0;  // which spelling of the key to send
  bool spaced = false;  // send the payload with extra whitespace

  // Draws the op and payload (r in [0, 20): upsert below 7, patch below
  // `patch_below`, delete above) and how the key and payload are spelled.
  void Randomize(std::mt19937& rng, uint32_t patch_below) {
    uint32_t r = rng() % 20;
    if (r < 7) {
      op = Op::kUpsert;
      payload = RandomDocument(rng);
      snapshot = rng() % 3 == 0;
    } else if (r < patch_below) {
      op = Op::kPatch;
      payload = RandomPatch(rng);
    } else {
      op = Op::kDelete;
    }
    spelling = rng();
    spaced = rng() % 2;
  }

  // What decides duplicate vs conflict: the event's decoded content.
  std::string Content() const {
    return absl::StrCat(OpName(op), "|", snapshot, "|", op == Op::kDelete ? "" : ToText(payload));
  }
  Event ToEvent() const {
    const KeySpec& k = Keys()[entity.key];
    return Event{.source = source,
                 .collection = entity.collection,
                 .key = k.spellings[spelling % k.spellings.size()],
                 .position = position,
                 .op = op,
                 .payload = op == Op::kDelete ? "" : ToText(payload, spaced),
                 .snapshot = snapshot};
  }
};

// The event as a line of the canonical format, its key and payload spelled
// as ToEvent spells them; `rng` decides whether a non-snapshot event says
// "snapshot":false.
inline std::string CanonicalLine(const ModelEvent& e, std::mt19937& rng) {
  const KeySpec& k = Keys()[e.entity.key];
  std::string line = absl::StrCat(R"({"collection":")", e.entity.collection, R"(","key":)",
                                  k.spellings[e.spelling % k.spellings.size()], R"(,"op":")",
                                  OpName(e.op), R"(","position":{"timestamp":)",
                                  e.position.timestamp, R"(,"tick":)", e.position.tick, "}");
  if (e.op != Op::kDelete) {
    absl::StrAppend(&line, R"(,"payload":)", ToText(e.payload, e.spaced));
  }
  if (e.snapshot || rng() % 2)
    absl::StrAppend(&line, R"(,"snapshot":)", e.snapshot ? "true" : "false");
  return line + "}";
}

// What the model expects of an entity: a version, a visible state.
struct ModelVersion {
  Op op;
  Position position;
  std::string source;
  bool snapshot;
  bool complete;
  std::string before, after;  // "" when absent
};

struct ModelState {
  std::optional<std::string> doc;  // nullopt: absent (never existed / deleted)
  bool complete = true;
  Position position;  // newest folded version
  std::string source;
  uint64_t seq = 0;  // the change that produced it (seq-axis queries)
};

class Model {
 public:
  // Records the arrival of `e`: the first event of an identity wins; later
  // ones are duplicates when their content is the same, else conflicts. An
  // applied event that changes the entity's visible state (document,
  // existence, completeness) takes the next seq.
  Outcome Add(const ModelEvent& e) {
    auto id = std::make_tuple(e.source, e.position, e.entity);
    std::string content = e.Content();
    auto [it, fresh] = identities_.emplace(id, content);
    if (!fresh) return it->second == content ? Outcome::kDuplicate : Outcome::kConflict;
    events_[e.entity].push_back(e);
    ModelState before = Current(e.entity);
    ModelState after = Fold(e.entity, std::nullopt, nullptr);
    if (after.doc != before.doc || after.complete != before.complete) {
      after.seq = ++last_seq_;
      changes_[e.entity].push_back(after);
    }
    return Outcome::kApplied;
  }

  // Records `e` as applied without computing seqs (a checker that learns
  // which events a store holds from the store itself; Fold then gives the
  // state and versions, with seq 0).
  void Load(const ModelEvent& e) { events_[e.entity].push_back(e); }

  uint64_t last_seq() const { return last_seq_; }

  std::vector<EntityId> Entities() const {
    std::vector<EntityId> out;
    for (const auto& [id, evs] : events_) out.push_back(id);
    return out;
  }

  // The fold of the entity's applied events with position <= as_of (all when
  // unset), in (position, source) order; fills `versions` if given. `seq` is
  // the entity's last change.
  ModelState Fold(const EntityId& id, std::optional<Position> as_of,
                  std::vector<ModelVersion>* versions) const {
    ModelState s;
    auto it = events_.find(id);
    if (it == events_.end()) return s;
    std::vector<const ModelEvent*> sorted;
    for (const ModelEvent& e : it->second) {
      if (!as_of || e.position <= *as_of) sorted.push_back(&e);
    }
    std::sort(sorted.begin(), sorted.end(), [](const ModelEvent* a, const ModelEvent* b) {
      return std::tie(a->position, a->source) < std::tie(b->position, b->source);
    });
    std::optional<Json> doc;
    for (const ModelEvent* e : sorted) {
      // The text of each version only when asked for (Add folds without).
      ModelVersion v{e->op,       e->position, e->source,
                     e->snapshot, true,        versions && doc ? ToText(*doc) : "",
                     ""};
      switch (e->op) {
        case Op::kUpsert:
          doc = e->payload;
          s.complete = true;
          break;
        case Op::kPatch:
          if (!doc) {
            doc = Json::Object();
            s.complete = false;  // an update seen before its load
          }
          MergePatch(&*doc, e->payload);
          break;
        default:
          doc.reset();
          s.complete = true;
          break;
      }
      if (versions) {
        v.complete = s.complete;
        v.after = doc ? ToText(*doc) : "";
        versions->push_back(std::move(v));
      }
      s.position = e->position;
      s.source = e->source;
    }
    if (doc) s.doc = ToText(*doc);
    auto ch = changes_.find(id);
    if (ch != changes_.end() && !ch->second.empty()) s.seq = ch->second.back().seq;
    return s;
  }

  // The state as the store knew it after commit `n`.
  ModelState AtSeq(const EntityId& id, uint64_t n) const {
    auto it = changes_.find(id);
    if (it == changes_.end()) return {};
    const ModelState* found = nullptr;
    for (const ModelState& s : it->second) {
      if (s.seq <= n) found = &s;
    }
    return found ? *found : ModelState{};
  }

 private:
  ModelState Current(const EntityId& id) const {
    auto it = changes_.find(id);
    if (it == changes_.end() || it->second.empty()) return {};
    return it->second.back();
  }

  std::map<std::tuple<std::string, Position, EntityId>, std::string> identities_;
  std::map<EntityId, std::vector<ModelEvent>> events_;
  std::map<EntityId, std::vector<ModelState>> changes_;  // in seq order
  uint64_t last_seq_ = 0;
};

// --- Rendering, so whole observations compare as strings with readable
// diffs. Seqs are left out unless asked for: they record arrival.
inline std::string PositionText(Position p) { return absl::StrCat(p.timestamp, ".", p.tick); }

inline std::string EntityLine(const Entity& e, bool with_seq) {
  return absl::StrCat(e.collection, " ", e.key, " ", e.document, " complete=", e.complete, " at ",
                      PositionText(e.position), "/", e.source,
                      with_seq ? absl::StrCat(" seq=", e.seq) : "", "\n");
}

inline std::string EntityLine(const EntityId& id, const ModelState& s, bool with_seq) {
  return absl::StrCat(id.collection, " ", id.canonical_key(), " ", s.doc.value_or(""),
                      " complete=", s.complete, " at ", PositionText(s.position), "/", s.source,
                      with_seq ? absl::StrCat(" seq=", s.seq) : "", "\n");
}

inline std::string VersionLine(Op op, Position p, const std::string& source, bool snapshot,
                               bool complete, const std::string& before, const std::string& after) {
  return absl::StrCat("  ", OpName(op), " at ", PositionText(p), "/", source,
                      " snapshot=", snapshot, " complete=", complete, " before=", before,
                      " after=", after, "\n");
}

inline std::string VersionLine(const Version& v) {
  return VersionLine(v.op, v.position, v.source, v.snapshot, v.complete, v.before, v.after);
}

inline std::string VersionLine(const ModelVersion& v) {
  return VersionLine(v.op, v.position, v.source, v.snapshot, v.complete, v.before, v.after);
}

// Every entity a snapshot streams, in order, one line each.
inline std::string SnapshotText(Store& store, const SnapshotOptions& options, bool with_seq) {
  std::string out;
  absl::Status s = store.Snapshot(options, [&](const Entity& e) {
    out += EntityLine(e, with_seq);
    return true;
  });
  if (!s.ok()) return absl::StrCat("snapshot failed: ", s.ToString(), "\n");
  return out;
}

}  // namespace cairn::model

#endif  // CAIRN_TESTS_COMMON_MODEL_H_
