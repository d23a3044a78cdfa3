// Registration-time checks of a collection's JSON Schema (DESIGN §7 Limits).
//
// valijson follows `$ref` lazily while it validates, so a schema whose
// references loop back without descending into the instance (`{"$ref":"#"}`,
// `{"allOf":[{"$ref":"#/definitions/a"}]}` with `a` pointing back, ...)
// recurses until the stack runs out. Such a cycle is found here, before the
// schema is stored or used: every subschema is a node; an edge joins two
// nodes that apply to the *same* instance (`$ref`, `allOf`, `anyOf`, `oneOf`,
// `not`, `if`/`then`/`else`, schema `dependencies`); keywords that descend
// into a member or item (`properties`, `items`, ...) make progress and are no
// edges. A cycle in that graph is rejected; a recursive schema that descends
// (a tree of `children`) is fine, and validating it is bounded by the
// instance's depth, which json::Parse bounds. Only local references (`#` and
// `#/json/pointer`) are followed; cairn fetches no remote schema.
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"
#include "rapidjson/pointer.h"

namespace cairn::formats {
namespace {

// Keywords whose value is a subschema applied to the same instance.
constexpr const char* kSameInstanceOne[] = {"not", "if", "then", "else"};
constexpr const char* kSameInstanceMany[] = {"allOf", "anyOf", "oneOf"};
// Keywords whose value is a subschema (or an object/array of them) applied
// to a member, an item or a name of the instance: progress.
constexpr const char* kDescendOne[] = {"additionalProperties", "additionalItems", "contains",
                                       "propertyNames", "items"};
constexpr const char* kDescendMap[] = {"properties", "patternProperties", "definitions", "$defs"};

struct Graph {
  const json::Value* root;
  std::vector<const json::Value*> nodes;
  std::map<const json::Value*, std::vector<const json::Value*>> same_instance;
};

absl::Status Build(Graph* g) {
  std::vector<const json::Value*> todo = {g->root};
  std::map<const json::Value*, bool> seen;
  auto add = [&](const json::Value& v) {
    if (v.IsObject() && !seen[&v]) {
      seen[&v] = true;
      todo.push_back(&v);
    }
  };
  seen[g->root] = true;
  while (!todo.empty()) {
    const json::Value* s = todo.back();
    todo.pop_back();
    g->nodes.push_back(s);
    std::vector<const json::Value*>& edges = g->same_instance[s];
    auto edge = [&](const json::Value& v) {
      if (!v.IsObject()) return;
      edges.push_back(&v);
      add(v);
    };
    for (const char* k : kSameInstanceOne) {
      if (const Value* v = Member(*s, k)) edge(*v);
    }
    for (const char* k : kSameInstanceMany) {
      const Value* v = Member(*s, k);
      if (v && v->IsArray()) {
        for (const auto& e : v->GetArray()) edge(e);
      }
    }
    if (const Value* deps = Member(*s, "dependencies"); deps && deps->IsObject()) {
      for (auto m = deps->MemberBegin(); m != deps->MemberEnd(); ++m) edge(m->value);
    }
    for (const char* k : kDescendOne) {
      const Value* v = Member(*s, k);
      if (!v) continue;
      if (v->IsArray()) {
        for (const auto& e : v->GetArray()) add(e);
      } else {
        add(*v);
      }
    }
    for (const char* k : kDescendMap) {
      const Value* v = Member(*s, k);
      if (v && v->IsObject()) {
        for (auto m = v->MemberBegin(); m != v->MemberEnd(); ++m) add(m->value);
      }
    }
    if (const Value* ref = Member(*s, "$ref")) {
      if (!IsText(*ref)) return absl::InvalidArgumentError("$ref must be a string");
      std::string_view r = Text(*ref);
      if (r.empty() || r[0] != '#') {
        return absl::InvalidArgumentError(
            absl::StrCat("$ref '", AbslView(Excerpt(r)),
                         "' is not local: only '#' and '#/pointer' are followed"));
      }
      const json::Value* target = g->root;
      if (r.size() > 1) {
        rapidjson::GenericPointer<json::Value> p(r.data(), r.size());
        if (!p.IsValid()) {
          return absl::InvalidArgumentError(
              absl::StrCat("$ref '", AbslView(Excerpt(r)), "' is not a valid JSON pointer"));
        }
        target = p.Get(*g->root);
      }
      // A schema is an object, or (draft 6 on) true or false.
      if (!target || !(target->IsObject() || target->IsBool())) {
        return absl::InvalidArgumentError(
            absl::StrCat("$ref '", AbslView(Excerpt(r)), "' points to no schema"));
      }
      edge(*target);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckJsonSchema(std::string_view text) {
  CAIRN_ASSIGN_OR_RETURN(json::Document doc, json::Parse(text));
  if (doc.IsBool()) return absl::OkStatus();  // true or false: nothing to follow
  if (!doc.IsObject()) return absl::InvalidArgumentError("not a JSON object (nor true or false)");
  Graph g{.root = &doc};
  CAIRN_RETURN_IF_ERROR(Build(&g));
  // Kahn's algorithm: what cannot be ordered lies on (or behind) a cycle.
  std::map<const json::Value*, size_t> in;
  for (const json::Value* n : g.nodes) {
    for (const json::Value* t : g.same_instance[n]) in[t]++;
  }
  std::vector<const json::Value*> ready;
  for (const json::Value* n : g.nodes) {
    if (in[n] == 0) ready.push_back(n);
  }
  size_t ordered = 0;
  while (!ready.empty()) {
    const json::Value* n = ready.back();
    ready.pop_back();
    ++ordered;
    for (const json::Value* t : g.same_instance[n]) {
      if (--in[t] == 0) ready.push_back(t);
    }
  }
  if (ordered != g.nodes.size()) {
    return absl::InvalidArgumentError(
        "references loop back to a schema without descending into the instance "
        "(a cycle through $ref, allOf, anyOf, oneOf, not, if/then/else or dependencies)");
  }
  return absl::OkStatus();
}

}  // namespace cairn::formats
