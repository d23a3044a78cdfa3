// embedded: opens a store in DATA_DIR, decodes a Debezium file (one change
// event a line, table products keyed by id) with cairn's formats, ingests it,
// and prints the products as they are now and as of the first commit.
//
//   embedded DATA_DIR DEBEZIUM_FILE
#include <fstream>
#include <iostream>
#include <sstream>

#include "cairn/formats.h"
#include "cairn/store.h"
#include "cairn/version.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: embedded DATA_DIR DEBEZIUM_FILE\n";
    return 2;
  }
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[2] << "\n";
    return 1;
  }
  std::stringstream payload;
  payload << in.rdbuf();

  auto store = cairn::Store::Open(argv[1], cairn::Options{});
  if (!store.ok()) {
    std::cerr << "open " << argv[1] << ": " << store.status() << "\n";
    return 1;
  }
  // What `cairn source add products-db --format debezium --key products=id`
  // registers in cairnd.
  cairn::SourceDefinition source{
      .name = "products-db", .format = "debezium", .key_fields = {{"products", {"id"}}}};
  auto events = cairn::formats::Decode(source, payload.str());
  if (!events.ok()) {
    std::cerr << argv[2] << ": " << events.status() << "\n";
    return 1;
  }
  auto result = (*store)->Ingest(*events, {.durable = true});
  if (!result.ok()) {
    std::cerr << "ingest: " << result.status() << "\n";
    return 1;
  }
  std::cout << "cairn " << cairn::kVersion << ": " << events->size() << " events, applied "
            << result->applied << ", duplicates " << result->duplicates << "\n";

  auto print = [](const cairn::Entity& e) {
    std::cout << e.collection << " " << e.key << " " << e.document << "\n";
    return true;
  };
  std::cout << "now:\n";
  if (auto s = (*store)->Snapshot({.collection = "products"}, print); !s.ok()) {
    std::cerr << "snapshot: " << s << "\n";
    return 1;
  }
  std::cout << "as of seq 1:\n";
  if (auto s = (*store)->Snapshot({.as_of_seq = 1, .collection = "products"}, print); !s.ok()) {
    std::cerr << "snapshot: " << s << "\n";
    return 1;
  }
  return 0;
}
