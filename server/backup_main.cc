// cairn-backup: the backup directories cairnd writes (--backup-dir), read,
// checked, pruned and restored without a server (README "Backup and
// restore"). Each backup is printed as one JSON line, as `cairn backup
// create` prints the one it asked for.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <iostream>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "cairn/backup.h"
#include "cairn/version.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace {

void Print(const cairn::BackupInfo& b) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("id");
  w.Uint(b.id);
  w.Key("seq");
  w.Uint64(b.seq);
  w.Key("created");
  w.String(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", b.created, absl::UTCTimeZone()).c_str());
  w.Key("size_bytes");
  w.Uint64(b.size_bytes);
  w.Key("files");
  w.Uint(b.files);
  w.Key("format_version");
  w.Uint64(b.format_version);
  w.Key("cairn_version");
  w.String(b.cairn_version.c_str());
  w.EndObject();
  std::cout << buf.GetString() << "\n";
}

int Fail(const absl::Status& s) {
  std::cerr << "error: " << s << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn-backup: list, verify, prune and restore cairn backups (no server needed)"};
  app.set_version_flag("--version", std::string("cairn-backup ") + cairn::kVersion);
  app.require_subcommand(1);
  std::string dir, target;
  uint32_t id = 0, keep = 0;
  auto* list = app.add_subcommand("list", "the backups in DIR, oldest first");
  list->add_option("dir", dir, "backup directory")->required();
  auto* verify = app.add_subcommand(
      "verify",
      "check a backup's file checksums, restore it aside and open it: its seq and "
      "every table block's checksum");
  verify->add_option("dir", dir, "backup directory")->required();
  verify->add_option("--id", id, "the backup (default: the newest)")->check(CLI::PositiveNumber);
  auto* prune = app.add_subcommand("prune", "delete all but the newest N backups");
  prune->add_option("dir", dir, "backup directory")->required();
  prune->add_option("--keep", keep, "how many to keep")->required()->check(CLI::PositiveNumber);
  auto* restore =
      app.add_subcommand("restore",
                         "restore a backup into a new data directory (absent or empty); then start "
                         "cairnd with --data-dir on it");
  restore->add_option("dir", dir, "backup directory")->required();
  restore->add_option("target", target, "the new data directory")->required();
  restore->add_option("--id", id, "the backup (default: the newest)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  std::optional<uint32_t> which;
  if (id != 0) which = id;
  if (*list) {
    auto all = cairn::backup::List(dir);
    if (!all.ok()) return Fail(all.status());
    for (const auto& b : *all) Print(b);
    return 0;
  }
  if (*prune) {
    auto deleted = cairn::backup::Prune(dir, keep);
    if (!deleted.ok()) return Fail(deleted.status());
    for (uint32_t d : *deleted) std::cout << R"({"deleted":)" << d << "}\n";
    return 0;
  }
  auto b = *verify ? cairn::backup::Verify(dir, which) : cairn::backup::Restore(dir, target, which);
  if (!b.ok()) return Fail(b.status());
  Print(*b);
  return 0;
}
