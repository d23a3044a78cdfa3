// cairn: command-line client for cairnd. Output is JSON lines on stdout;
// progress and summaries go to stderr. Exit status: 0 ok, 1 a call failed,
// 2 bad usage, 3 some ingest batches were rejected.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cairn/client.h"
#include "cairn/status.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace {

using cairn::client::Client;

int Fail(const absl::Status& s) {
  std::cerr << "error: " << s << "\n";
  return 1;
}

// JSON-lines writer: strings escaped by RapidJSON, stored JSON embedded raw.
class Line {
 public:
  Line() : w_(buf_) { w_.StartObject(); }
  Line& Str(const char* k, std::string_view v) {
    w_.Key(k);
    w_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    return *this;
  }
  Line& Raw(const char* k, std::string_view json) {
    w_.Key(k);
    if (json.empty()) {
      w_.Null();
    } else {
      w_.RawValue(json.data(), json.size(), rapidjson::kObjectType);
    }
    return *this;
  }
  Line& U64(const char* k, uint64_t v) {
    w_.Key(k);
    w_.Uint64(v);
    return *this;
  }
  Line& Bool(const char* k, bool v) {
    w_.Key(k);
    w_.Bool(v);
    return *this;
  }
  Line& Pos(cairn::Position p) {
    U64("timestamp", p.timestamp);
    return U64("tick", p.tick);
  }
  void Print() {
    w_.EndObject();
    std::cout << buf_.GetString() << "\n";
  }

 private:
  rapidjson::StringBuffer buf_;
  rapidjson::Writer<rapidjson::StringBuffer> w_;
};

void PrintEntity(const cairn::Entity& e) {
  Line()
      .Str("collection", e.collection)
      .Raw("key", e.key)
      .Raw("document", e.document)
      .Bool("complete", e.complete)
      .Pos(e.position)
      .Str("source", e.source)
      .U64("seq", e.seq)
      .Print();
}

void PrintChange(const cairn::Change& c) {
  Line()
      .U64("seq", c.seq)
      .Str("collection", c.collection)
      .Raw("key", c.key)
      .Str("op", cairn::OpName(c.op))
      .Raw("before", c.before)
      .Raw("after", c.after)
      .Pos(c.position)
      .Str("source", c.source)
      .Print();
}

// "2026-11-24T10:00:00Z" (RFC 3339) or microseconds since the epoch.
absl::StatusOr<uint64_t> ParseTime(const std::string& s) {
  uint64_t micros;
  if (absl::SimpleAtoi(s, &micros)) return micros;
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, s, &t, &err)) {
    return absl::InvalidArgumentError(
        "--as-of-time: expected RFC 3339 or microseconds: " + err);
  }
  return static_cast<uint64_t>(absl::ToUnixMicros(t));
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::stringstream ss;
  if (path.empty() || path == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError("cannot read " + path);
    ss << in.rdbuf();
  }
  return ss.str();
}

// Cuts a byte stream into payloads the source's format can decode alone:
// JSON-lines formats at line ends, SSE at the blank line ending an event,
// whole documents (datapoints, bitbroker) only at the end of the input. Fed
// in chunks of any size, so a live feed on stdin is sent as it arrives.
class Batcher {
 public:
  Batcher(const std::string& format, size_t per_batch)
      : whole_(format == "datapoints" || format == "bitbroker"),
        sse_(format == "sse-feed"),
        per_batch_(per_batch) {}

  // Appends `chunk`; moves every full batch to *out.
  void Add(std::string_view chunk, std::vector<std::string>* out) {
    buffer_.append(chunk);
    if (whole_) return;
    while (true) {
      size_t end = buffer_.find('\n', scanned_);
      if (end == std::string::npos) {
        scanned_ = buffer_.size();
        return;
      }
      std::string_view line(buffer_.data() + line_start_, end - line_start_);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      bool blank = line.find_first_not_of(" \t") == std::string_view::npos;
      // A record ends at a non-blank line (JSON lines) or a blank one (SSE).
      if (sse_ ? blank : !blank) ++records_;
      line_start_ = scanned_ = end + 1;
      complete_ = line_start_;
      if (records_ >= per_batch_) Cut(out);
    }
  }

  // Moves the complete records not yet sent (a partial batch) to *out.
  void Flush(std::vector<std::string>* out) {
    if (records_ > 0) Cut(out);
  }

  // End of input: everything left, including a last record without its end.
  void Finish(std::vector<std::string>* out) {
    if (buffer_.find_first_not_of(" \t\r\n") != std::string::npos)
      out->push_back(buffer_);
    buffer_.clear();
    line_start_ = scanned_ = complete_ = records_ = 0;
  }

 private:
  void Cut(std::vector<std::string>* out) {
    out->push_back(buffer_.substr(0, complete_));
    buffer_.erase(0, complete_);
    line_start_ -= complete_;
    scanned_ -= complete_;
    complete_ = records_ = 0;
  }

  const bool whole_, sse_;
  const size_t per_batch_;
  std::string buffer_;
  size_t line_start_ = 0;  // start of the line being scanned
  size_t scanned_ = 0;     // bytes searched for '\n' so far
  size_t complete_ = 0;    // end of the last complete record
  size_t records_ = 0;     // complete records in buffer_[0, complete_)
};

struct IngestTotals {
  uint64_t batches = 0, applied = 0, duplicates = 0, conflicts = 0,
           rejected = 0;
};

int Ingest(Client& client, const std::string& source,
           const std::vector<std::string>& files, size_t per_batch,
           bool durable) {
  auto def = client.GetSource(source);
  if (!def.ok()) return Fail(def.status());
  std::vector<std::string> inputs =
      files.empty() ? std::vector<std::string>{"-"} : files;
  bool tty = isatty(STDERR_FILENO);
  IngestTotals t;
  for (const std::string& file : inputs) {
    bool is_stdin = file == "-";
    int fd = is_stdin ? STDIN_FILENO : open(file.c_str(), O_RDONLY);
    if (fd < 0) return Fail(absl::NotFoundError("cannot read " + file));
    struct stat st {};
    uint64_t size = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : 0;
    auto stream = client.OpenIngestStream(/*payloads=*/true);
    if (!stream.ok()) return Fail(stream.status());
    constexpr size_t kWindow = 8;  // batches in flight
    size_t sent = 0, received = 0;
    uint64_t read_bytes = 0;
    auto receive = [&]() -> absl::Status {
      std::vector<cairn::client::RecordError> errors;
      auto r = (*stream)->Receive(&errors);
      size_t index = received++;
      ++t.batches;
      if (r.ok()) {
        t.applied += r->applied;
        t.duplicates += r->duplicates;
        t.conflicts += r->conflicts;
      } else if (absl::IsInvalidArgument(r.status()) ||
                 absl::IsNotFound(r.status()) ||
                 absl::IsOutOfRange(r.status()) ||
                 absl::IsPermissionDenied(r.status())) {
        ++t.rejected;
        std::cerr << (tty ? "\r" : "") << file << ": batch " << index
                  << " rejected: " << r.status().message() << "\n";
      } else {
        return r.status();
      }
      if (tty) {
        std::cerr << "\r" << file;
        if (size > 0) {
          size_t pct = std::min<uint64_t>(100, read_bytes * 100 / size);
          std::string bar(pct / 5, '#');
          std::cerr << " [" << bar << std::string(20 - bar.size(), ' ') << "] "
                    << pct << "%";
        }
        std::cerr << " " << t.applied << " applied" << std::flush;
      }
      return absl::OkStatus();
    };
    auto send = [&](std::vector<std::string>& batches) -> absl::Status {
      for (std::string& b : batches) {
        if (sent - received >= kWindow) CAIRN_RETURN_IF_ERROR(receive());
        CAIRN_RETURN_IF_ERROR(
            (*stream)->SendPayload(source, std::move(b), durable));
        ++sent;
      }
      batches.clear();
      return absl::OkStatus();
    };

    Batcher batcher(def->format, per_batch);
    std::vector<std::string> batches;
    std::string chunk(1 << 16, '\0');
    while (true) {
      // A pipe that goes quiet (a live feed) gets its partial batch sent and
      // its acks read, so nothing waits for the next burst.
      if (!S_ISREG(st.st_mode)) {
        pollfd p{.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) == 0) {
          batcher.Flush(&batches);
          if (auto s = send(batches); !s.ok()) return Fail(s);
          while (received < sent) {
            if (auto s = receive(); !s.ok()) return Fail(s);
          }
          continue;
        }
      }
      ssize_t n = read(fd, chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        return Fail(
            absl::InternalError("read " + file + ": " + strerror(errno)));
      if (n == 0) break;
      read_bytes += n;
      batcher.Add(std::string_view(chunk.data(), n), &batches);
      if (auto s = send(batches); !s.ok()) return Fail(s);
    }
    if (!is_stdin) close(fd);
    batcher.Finish(&batches);
    if (auto s = send(batches); !s.ok()) return Fail(s);
    while (received < sent) {
      if (auto s = receive(); !s.ok()) return Fail(s);
    }
    if (auto s = (*stream)->Close(); !s.ok()) return Fail(s);
    if (tty) std::cerr << "\n";
  }
  std::cerr << "batches " << t.batches << ": accepted " << t.applied
            << ", duplicate " << t.duplicates << ", conflict " << t.conflicts
            << ", rejected batches " << t.rejected << "\n";
  return t.rejected ? 3 : 0;
}

// "COLL=a,b" pairs.
absl::Status ParsePairs(const std::vector<std::string>& in, const char* flag,
                        std::map<std::string, std::string>* out) {
  for (const auto& s : in) {
    std::pair<std::string, std::string> kv =
        absl::StrSplit(s, absl::MaxSplits('=', 1));
    if (kv.first.empty() || kv.second.empty()) {
      return absl::InvalidArgumentError(std::string(flag) +
                                        " expects NAME=VALUE, got '" + s + "'");
    }
    (*out)[kv.first] = kv.second;
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn: client for the cairnd event-sourced state store"};
  app.require_subcommand(1);
  cairn::client::ClientOptions options;
  app.add_option("--server", options.target, "cairnd address")
      ->capture_default_str()
      ->envname("CAIRN_SERVER");
  app.add_option("--token", options.token, "bearer token")
      ->envname("CAIRN_TOKEN");
  app.add_option("--tls-ca", options.tls_ca_file, "PEM roots (enables TLS)");
  app.add_option("--tls-cert", options.tls_cert_file,
                 "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", options.tls_key_file,
                 "PEM client key (mutual TLS)");

  // ingest
  auto* ingest = app.add_subcommand(
      "ingest", "ingest files (or stdin) through a registered source");
  std::string ingest_source;
  std::vector<std::string> ingest_files;
  size_t per_batch = 500;
  bool durable = false;
  ingest
      ->add_option("--source", ingest_source,
                   "registered source (decides the format)")
      ->required();
  ingest->add_option("--batch", per_batch, "records per batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  ingest->add_flag("--durable", durable, "ack only after fsync");
  ingest->add_option("files", ingest_files, "input files ('-' or none: stdin)");

  // get
  auto* get = app.add_subcommand("get", "current state of one entity");
  std::string collection, key;
  get->add_option("collection", collection)->required();
  get->add_option("key", key, "JSON key text, e.g. 101 or '\"ACC-1\"'")
      ->required();

  // snapshot
  auto* snapshot = app.add_subcommand(
      "snapshot", "all entities (JSON lines), now or at a point");
  std::string prefix, as_of_time;
  uint64_t as_of_seq = 0, as_of_tick = 0;
  bool exclude_incomplete = false;
  snapshot->add_option("--collection", collection);
  snapshot->add_option("--prefix", prefix,
                       "string keys starting with this (needs --collection)");
  auto* seq_opt =
      snapshot->add_option("--as-of-seq", as_of_seq, "state after commit N");
  auto* time_opt = snapshot->add_option(
      "--as-of-time", as_of_time, "event time: RFC 3339 or µs since epoch");
  snapshot->add_option("--as-of-tick", as_of_tick,
                       "tick at --as-of-time (default: last)");
  seq_opt->excludes(time_opt);
  snapshot->add_flag("--exclude-incomplete", exclude_incomplete);

  // history
  auto* history =
      app.add_subcommand("history", "versions of one entity with before/after");
  bool reverse = false;
  size_t limit = 0;
  history->add_option("collection", collection)->required();
  history->add_option("key", key)->required();
  history->add_flag("--reverse", reverse, "newest first");
  history->add_option("--limit", limit);

  // subscribe
  auto* subscribe =
      app.add_subcommand("subscribe", "tail changes (JSON lines)");
  std::vector<std::string> sub_sources, sub_collections, sub_keys;
  std::string from = "now", checkpoint;
  uint64_t max_changes = 0;
  subscribe->add_option("--source", sub_sources);
  subscribe->add_option("--collection", sub_collections);
  subscribe->add_option("--key", sub_keys, "explicit keys (JSON text)");
  subscribe->add_option("--prefix", prefix);
  subscribe->add_option("--from", from, "now | snapshot | <seq>")
      ->capture_default_str();
  subscribe->add_option(
      "--checkpoint", checkpoint,
      "resume from this named checkpoint and commit progress to it");
  subscribe->add_option("--max", max_changes,
                        "stop after N changes (0: never)");

  // session
  auto* session = app.add_subcommand("session", "contribution sessions");
  session->require_subcommand(1);
  auto* s_open =
      session->add_subcommand("open", "open a session; prints its id");
  std::string source, mode = "stream", session_id, payload_file;
  s_open->add_option("source", source)->required();
  s_open->add_option("collection", collection)->required();
  s_open->add_option("--mode", mode)
      ->check(CLI::IsMember({"stream", "accrue", "replace"}))
      ->capture_default_str();
  auto* s_upsert =
      session->add_subcommand("upsert", "post records in the source's format");
  s_upsert->add_option("id", session_id)->required();
  s_upsert->add_option("file", payload_file,
                       "records file ('-' or none: stdin)");
  auto* s_delete = session->add_subcommand("delete", "delete records by id");
  std::vector<std::string> delete_ids;
  s_delete->add_option("id", session_id)->required();
  s_delete
      ->add_option("keys", delete_ids,
                   "ids (plain text; use JSON for non-strings)")
      ->required();
  auto* s_close =
      session->add_subcommand("close", "close (commit unless --discard)");
  bool discard = false;
  s_close->add_option("id", session_id)->required();
  s_close->add_flag("--discard", discard);

  // source
  auto* src = app.add_subcommand("source", "registered sources");
  src->require_subcommand(1);
  auto* src_add = src->add_subcommand("add", "register (or replace) a source");
  cairn::SourceDefinition def;
  std::vector<std::string> key_specs, map_specs, schema_specs;
  src_add->add_option("name", def.name)->required();
  src_add->add_option("--format", def.format)
      ->required()
      ->check(CLI::IsMember({"debezium", "goldengate", "infosphere", "sse-feed",
                             "datapoints", "bitbroker", "canonical"}));
  src_add->add_option("--key", key_specs, "COLLECTION=field1,field2");
  src_add->add_option("--map", map_specs, "SOURCE_TABLE=COLLECTION");
  src_add->add_option("--default-collection", def.default_collection);
  src_add->add_option("--schema", schema_specs,
                      "COLLECTION=schema.json (JSON Schema)");
  auto* src_list = src->add_subcommand("list", "list sources");
  auto* src_rm = src->add_subcommand("rm", "remove a source");
  src_rm->add_option("name", source)->required();

  auto* stats =
      app.add_subcommand("stats", "store, source and subscription statistics");
  auto* health = app.add_subcommand("health", "standard gRPC health check");

  CLI11_PARSE(app, argc, argv);

  auto client_or = Client::Connect(options);
  if (!client_or.ok()) return Fail(client_or.status());
  Client& client = **client_or;

  if (*ingest)
    return Ingest(client, ingest_source, ingest_files, per_batch, durable);
  if (*get) {
    auto e = client.Get(collection, key);
    if (!e.ok()) return Fail(e.status());
    PrintEntity(*e);
    return 0;
  }
  if (*snapshot) {
    cairn::SnapshotOptions o{.collection = collection,
                             .key_prefix = prefix,
                             .include_incomplete = !exclude_incomplete};
    if (*seq_opt) o.as_of_seq = as_of_seq;
    if (*time_opt) {
      auto ts = ParseTime(as_of_time);
      if (!ts.ok()) return Fail(ts.status());
      o.as_of_position = cairn::Position{
          *ts, snapshot->count("--as-of-tick") ? as_of_tick : UINT64_MAX - 1};
    }
    auto s = client.Snapshot(o, [](const cairn::Entity& e) {
      PrintEntity(e);
      return true;
    });
    return s.ok() ? 0 : Fail(s);
  }
  if (*history) {
    auto versions =
        client.History(collection, key, {.reverse = reverse, .limit = limit});
    if (!versions.ok()) return Fail(versions.status());
    for (const auto& v : *versions) {
      Line()
          .Str("op", cairn::OpName(v.op))
          .Pos(v.position)
          .Str("source", v.source)
          .U64("seq", v.seq)
          .Bool("complete", v.complete)
          .Raw("before", v.before)
          .Raw("after", v.after)
          .Print();
    }
    return 0;
  }
  if (*subscribe) {
    cairn::client::SubscribeStart start;
    if (!checkpoint.empty() && client.GetCheckpoint(checkpoint).ok()) {
      start.kind = cairn::client::SubscribeStart::Kind::kCheckpoint;
      start.checkpoint = checkpoint;
    } else if (from == "now") {
      start.kind = cairn::client::SubscribeStart::Kind::kNow;
    } else if (from == "snapshot") {
      start.kind = cairn::client::SubscribeStart::Kind::kSnapshot;
    } else if (absl::SimpleAtoi(from, &start.from_seq)) {
      start.kind = cairn::client::SubscribeStart::Kind::kFromSeq;
    } else {
      std::cerr << "--from: expected now, snapshot or a seq, got '" << from
                << "'\n";
      return 2;
    }
    auto sub = client.Subscribe({.sources = sub_sources,
                                 .collections = sub_collections,
                                 .key_prefix = prefix,
                                 .keys = sub_keys},
                                start);
    if (!sub.ok()) return Fail(sub.status());
    uint64_t changes = 0;
    cairn::SubscriptionItem item;
    while (true) {
      auto got = (*sub)->Next(absl::Seconds(1), &item);
      if (!got.ok()) return Fail(got.status());
      if (!*got) continue;
      switch (item.kind) {
        case cairn::SubscriptionItem::Kind::kSnapshotEntity:
          PrintEntity(item.entity);
          break;
        case cairn::SubscriptionItem::Kind::kSnapshotEnd:
          Line().U64("snapshot_end", item.seq).Print();
          break;
        case cairn::SubscriptionItem::Kind::kCaughtUp:
          Line().U64("caught_up", item.seq).Print();
          std::cout.flush();
          break;
        case cairn::SubscriptionItem::Kind::kChange:
          PrintChange(item.change);
          std::cout.flush();
          // The line is out: progress is committed after it, so a restart
          // continues exactly after the last printed change.
          if (!checkpoint.empty()) {
            if (auto s = client.CommitCheckpoint(checkpoint, item.change.seq);
                !s.ok()) {
              return Fail(s);
            }
          }
          if (max_changes && ++changes >= max_changes) return 0;
          break;
      }
    }
  }
  if (*s_open) {
    cairn::SessionMode m = mode == "accrue"    ? cairn::SessionMode::kAccrue
                           : mode == "replace" ? cairn::SessionMode::kReplace
                                               : cairn::SessionMode::kStream;
    auto id = client.OpenSession(source, collection, m);
    if (!id.ok()) return Fail(id.status());
    std::cout << *id << "\n";
    return 0;
  }
  if (*s_upsert) {
    auto data = ReadAll(payload_file);
    if (!data.ok()) return Fail(data.status());
    auto keys = client.SessionUpsertPayload(session_id, *data);
    if (!keys.ok()) return Fail(keys.status());
    for (const auto& k : *keys) std::cout << k << "\n";
    return 0;
  }
  if (*s_delete) {
    // Plain ids are strings; JSON text (numbers, objects, quoted) is kept.
    for (auto& id : delete_ids) {
      bool json =
          !id.empty() && (id[0] == '{' || id[0] == '"' || id[0] == '-' ||
                          (id[0] >= '0' && id[0] <= '9'));
      if (!json) {
        rapidjson::StringBuffer b;
        rapidjson::Writer<rapidjson::StringBuffer> w(b);
        w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
        id = b.GetString();
      }
    }
    auto keys = client.SessionDelete(session_id, delete_ids);
    if (!keys.ok()) return Fail(keys.status());
    for (const auto& k : *keys) std::cout << k << "\n";
    return 0;
  }
  if (*s_close) {
    auto r = client.CloseSession(session_id, !discard);
    if (!r.ok()) return Fail(r.status());
    Line()
        .U64("first_seq", r->first_seq)
        .U64("last_seq", r->last_seq)
        .U64("applied", r->applied)
        .Print();
    return 0;
  }
  if (*src_add) {
    std::map<std::string, std::string> keys, schemas;
    for (auto [flag, specs, out] :
         {std::tuple{"--key", &key_specs, &keys},
          std::tuple{"--map", &map_specs, &def.collection_map},
          std::tuple{"--schema", &schema_specs, &schemas}}) {
      if (auto s = ParsePairs(*specs, flag, out); !s.ok()) {
        std::cerr << s.message() << "\n";
        return 2;
      }
    }
    for (const auto& [c, fields] : keys) {
      def.key_fields[c] = absl::StrSplit(fields, ',', absl::SkipEmpty());
    }
    for (const auto& [c, file] : schemas) {
      auto text = ReadAll(file);
      if (!text.ok()) return Fail(text.status());
      def.json_schemas[c] = *text;
    }
    auto s = client.PutSource(def);
    return s.ok() ? 0 : Fail(s);
  }
  if (*src_list) {
    auto all = client.ListSources();
    if (!all.ok()) return Fail(all.status());
    for (const auto& d : *all) {
      Line()
          .Str("name", d.name)
          .Str("format", d.format)
          .Str("default_collection", d.default_collection)
          .Print();
    }
    return 0;
  }
  if (*src_rm) {
    auto s = client.RemoveSource(source);
    return s.ok() ? 0 : Fail(s);
  }
  if (*stats) {
    auto st = client.Stats();
    if (!st.ok()) return Fail(st.status());
    Line()
        .U64("last_seq", st->store.last_seq)
        .U64("oldest_seq", st->store.oldest_seq)
        .U64("oldest_timestamp", st->store.oldest_position.timestamp)
        .Print();
    for (const auto& [name, s] : st->store.sources) {
      Line()
          .Str("source", name)
          .U64("accepted", s.accepted)
          .U64("duplicates", s.duplicates)
          .U64("conflicts", s.conflicts)
          .U64("rejected_batches", s.rejected_batches)
          .Pos(s.last_position)
          .Print();
    }
    for (const auto& s : st->subscriptions) {
      Line()
          .U64("subscription", s.id)
          .U64("delivered_seq", s.delivered_seq)
          .U64("lag", s.lag)
          .Print();
    }
    for (const auto& [name, seq] : st->checkpoints) {
      Line().Str("checkpoint", name).U64("seq", seq).Print();
    }
    return 0;
  }
  if (*health) {
    auto s = client.Health();
    if (!s.ok()) return Fail(s);
    std::cout << "SERVING\n";
    return 0;
  }
  return 2;
}
