// A main for fuzz targets outside libFuzzer (the normal build): runs the
// target once on every file of the directories or files given, so the seed
// corpora are a regression test of each target's properties.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  size_t n = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg(argv[i]);
    auto run = [&](const std::filesystem::path& p) {
      std::ifstream in(p, std::ios::binary);
      std::string bytes(std::istreambuf_iterator<char>(in), {});
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++n;
    };
    if (std::filesystem::is_directory(arg)) {
      for (const auto& f : std::filesystem::directory_iterator(arg)) run(f.path());
    } else {
      run(arg);
    }
  }
  std::printf("%zu inputs, no failure\n", n);
  return n > 0 ? 0 : 1;
}
