// cairn_demo: opens a store in a local directory, ingests a few events out of
// order, and prints the current state, a point-in-time snapshot and one
// entity's history. The embedded-API quickstart in README.md mirrors it.
#include <iostream>

#include "cairn/store.h"

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "./data";
  auto store = cairn::Store::Open(path, cairn::Options{});
  if (!store.ok()) {
    std::cerr << "open " << path << ": " << store.status() << "\n";
    return 1;
  }
  std::vector<cairn::Event> events = {
      {.source = "billing",
       .collection = "account",
       .key = "1003",
       .position = {1700000000000000, 9},
       .op = cairn::Op::kPatch,
       .payload = R"({"plan":"platinum"})"},
      {.source = "billing",
       .collection = "account",
       .key = "1003",
       .position = {1700000000000000, 1},
       .op = cairn::Op::kUpsert,
       .payload = R"({"acct_no":1003,"status":"ACTIVE","plan":"basic","balance":10})",
       .snapshot = true},
  };
  auto result = (*store)->Ingest(events, {.durable = true});
  if (!result.ok()) {
    std::cerr << "ingest: " << result.status() << "\n";
    return 1;
  }
  std::cout << "ingested: applied=" << result->applied << " duplicates=" << result->duplicates
            << " conflicts=" << result->conflicts << " seqs " << result->first_seq << ".."
            << result->last_seq << "\n";
  auto print = [](const cairn::Entity& e) {
    std::cout << "  " << e.collection << " " << e.key << " " << e.document
              << (e.complete ? "" : " (incomplete)") << " seq=" << e.seq << "\n";
    return true;
  };
  std::cout << "current state:\n";
  if (auto s = (*store)->Snapshot({}, print); !s.ok()) std::cerr << s << "\n";
  std::cout << "as of position (1700000000000000, 1):\n";
  if (auto s = (*store)->Snapshot({.as_of_position = cairn::Position{1700000000000000, 1}}, print);
      !s.ok()) {
    std::cerr << s << "\n";
  }
  auto history = (*store)->History("account", "1003", {});
  if (history.ok()) {
    std::cout << "history of account 1003:\n";
    for (const auto& v : *history) {
      std::cout << "  " << cairn::OpName(v.op) << " @" << v.position.timestamp << "/"
                << v.position.tick << " before=" << (v.before.empty() ? "-" : v.before)
                << " after=" << (v.after.empty() ? "-" : v.after) << "\n";
    }
  }
  return 0;
}
