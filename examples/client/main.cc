// client: connects to cairnd at TARGET, ingests an upsert and a patch of one
// account (the patch first: order does not matter), and prints the account's
// state and history, and the server's version.
//
//   client TARGET
#include <iostream>

#include "cairn/client.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: client TARGET\n";
    return 2;
  }
  auto client = cairn::client::Client::Connect({.target = argv[1]});
  if (!client.ok()) {
    std::cerr << "connect " << argv[1] << ": " << client.status() << "\n";
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
       .payload = R"({"acct_no":1003,"plan":"basic","balance":10})",
       .snapshot = true},
  };
  auto result = (*client)->Ingest(events, /*durable=*/true);
  if (!result.ok()) {
    std::cerr << "ingest: " << result.status() << "\n";
    return 1;
  }
  std::cout << "applied " << result->applied << ", duplicates " << result->duplicates << "\n";
  auto account = (*client)->Get("account", "1003");
  if (!account.ok()) {
    std::cerr << "get: " << account.status() << "\n";
    return 1;
  }
  std::cout << "account 1003 " << account->document << "\n";
  auto versions = (*client)->History("account", "1003", {});
  if (!versions.ok()) {
    std::cerr << "history: " << versions.status() << "\n";
    return 1;
  }
  for (const auto& v : *versions) {
    std::cout << "version " << v.position.tick << " " << v.before << " -> " << v.after << "\n";
  }
  auto stats = (*client)->Stats();
  if (!stats.ok()) {
    std::cerr << "stats: " << stats.status() << "\n";
    return 1;
  }
  std::cout << "cairnd " << stats->store.versions.cairn << ", store format "
            << stats->store.versions.format << "\n";
  return 0;
}
