// store_digest DATA_DIR: one line, a digest of every key and value in every
// column family of a (closed) cairn store, opened read-only. The hostile
// tests compare it before and after a run of rejected requests: nothing of
// a rejected request may be stored. Per-source counters (meta "source/...",
// which count rejected batches by design) are left out.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "retention.h"
#include "rocksdb/db.h"

namespace {

// FNV-1a, 64 bits: stable across runs, enough to tell two stores apart.
void Mix(uint64_t* h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    *h ^= c;
    *h *= 1099511628211ull;
  }
  // A length marker, so ("ab","c") and ("a","bc") differ.
  for (int i = 0; i < 8; ++i) {
    *h ^= (bytes.size() >> (8 * i)) & 0xFF;
    *h *= 1099511628211ull;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: store_digest DATA_DIR\n");
    return 2;
  }
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), argv[1], &names);
  if (!s.ok()) {
    std::fprintf(stderr, "store_digest: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const auto& n : names) {
    // The families whose links are merge operands read through cairn's
    // merge operator (the digest is of what a reader sees).
    rocksdb::ColumnFamilyOptions cfo;
    cfo.merge_operator = cairn::internal::MergeOperatorOf(n);
    cfs.emplace_back(n, cfo);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), argv[1], cfs, &handles, &raw);
  if (!s.ok()) {
    std::fprintf(stderr, "store_digest: %s\n", s.ToString().c_str());
    return 1;
  }
  std::unique_ptr<rocksdb::DB> db(raw);
  uint64_t h = 14695981039346656037ull;
  uint64_t entries = 0;
  for (size_t i = 0; i < handles.size(); ++i) {
    Mix(&h, names[i]);
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[i]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (names[i] == "default" && it->key().starts_with("source/")) continue;
      Mix(&h, it->key().ToStringView());
      Mix(&h, it->value().ToStringView());
      ++entries;
    }
    if (!it->status().ok()) {
      std::fprintf(stderr, "store_digest: %s\n", it->status().ToString().c_str());
      return 1;
    }
  }
  for (auto* handle : handles) db->DestroyColumnFamilyHandle(handle);
  std::printf("%016llx %llu\n", static_cast<unsigned long long>(h),
              static_cast<unsigned long long>(entries));
  return 0;
}
