// scoreboard: the workload driver behind bench/run.
//
//   scoreboard SYSTEM WORKLOAD [--flags]
//
// runs one workload against one system and prints one JSON object with what
// it measured. bench/run starts the servers (cairnd, PostgreSQL, Redis),
// passes their addresses, alternates systems and repetitions, and adds what
// only it can see (server CPU, server disk writes, RSS).
//
// Systems: cairn (embedded Store), cairn-grpc (a running cairnd), postgres
// (libpq), sqlite (C API, WAL mode), redis (hiredis). Every system gets the
// same events: 24-byte keys, ~200-byte JSON documents, entity chosen
// uniformly or by Zipf (s = 0.99), positions increasing with the event index
// unless --late-fraction displaces some (W6). Events are generated before the
// clock starts; converting them to the system's request is part of the
// measured work, as it is for a user.
//
// What each peer does per event, and why it is its fair configuration, is
// written next to its class below and summarised in the README.

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "cairn/client.h"
#include "cairn/store.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "scoreboard: " << what << "\n";
  std::exit(1);
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// Bytes this process made the kernel write to storage (/proc/self/io).
uint64_t WriteBytes() {
  std::ifstream io("/proc/self/io");
  std::string name;
  uint64_t value = 0;
  while (io >> name >> value) {
    if (name == "write_bytes:") return value;
  }
  return 0;
}

uint64_t RssBytes(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0)
      return std::strtoull(line.c_str() + strlen(field), nullptr, 10) << 10;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Events.

struct Config {
  std::string system, workload;
  std::string dir = "/tmp/scoreboard";
  std::string addr = "127.0.0.1:50051";  // cairnd
  std::string pg = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
  int redis_port = 6379;
  uint64_t entities = 100000;
  uint64_t events = 200000;
  uint64_t batch = 1000;
  int producers = 1;
  bool durable = false;
  std::string dist = "uniform";
  uint64_t seed = 42;
  // W5: versions per entity; snapshot as of these fractions of the log.
  uint64_t versions = 1;
  // W4.
  double rate = 1000;
  int subscribers = 1;
  double seconds = 3;
  // W6.
  double late_fraction = 0;
  uint64_t displacement = 0;
  // cairn-grpc: messages in flight per stream.
  size_t window = 32;
};

constexpr char kCollection[] = "bench";
constexpr char kSource[] = "bench";

struct Ev {
  uint64_t entity = 0;
  uint64_t pos = 0;  // position (µs): increasing with the event index
  std::string key;   // 24 bytes
  std::string doc;   // ~200 bytes of JSON
};

std::string KeyOf(uint64_t entity) {
  char buf[32];
  snprintf(buf, sizeof buf, "k%023" PRIu64, entity);
  return buf;
}

// ~200 bytes. `t` (W4) carries the producer's send time in ns.
std::string DocOf(uint64_t entity, uint64_t version, int64_t t = 0) {
  char buf[320];
  int n = snprintf(buf, sizeof buf,
                   "{\"id\":\"%s\",\"version\":%" PRIu64 ",\"t\":%" PRId64
                   ",\"name\":\"customer-%08" PRIu64 "\",\"status\":\"active\",\"balance\":%" PRIu64
                   ",\"city\":\"Trondheim\",\"tags\":[\"a\",\"b\"],\"note\":\"",
                   KeyOf(entity).c_str(), version, t, entity, (entity * 7919 + version) % 100000);
  std::string doc(buf, n);
  while (doc.size() < 196) doc.push_back('x');
  doc += "\"}";
  return doc;
}

class EntityPicker {
 public:
  EntityPicker(const Config& c) : n_(c.entities), zipf_(c.dist == "zipf"), rng_(c.seed) {
    if (c.dist != "uniform" && c.dist != "zipf") Die("--dist must be uniform or zipf");
    if (zipf_) {
      cdf_.resize(n_);
      double sum = 0;
      for (uint64_t i = 0; i < n_; ++i) cdf_[i] = (sum += 1.0 / std::pow(i + 1.0, 0.99));
      for (double& v : cdf_) v /= sum;
    }
  }
  uint64_t Next() {
    if (!zipf_) return std::uniform_int_distribution<uint64_t>(0, n_ - 1)(rng_);
    double u = std::uniform_real_distribution<double>(0, 1)(rng_);
    uint64_t rank = std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
    rank = std::min(rank, n_ - 1);
    return (rank * 2654435761ull) % n_;  // spread the hot keys over the key space
  }

 private:
  uint64_t n_;
  bool zipf_;
  std::mt19937_64 rng_;
  std::vector<double> cdf_;
};

// The event stream of a workload. Late events (W6): a fraction of the events
// arrive `displacement` places after their position order.
std::vector<Ev> MakeEvents(const Config& c) {
  EntityPicker pick(c);
  std::vector<uint64_t> versions(c.entities, 0);
  std::vector<Ev> out(c.events);
  for (uint64_t i = 0; i < c.events; ++i) {
    Ev& e = out[i];
    e.entity = pick.Next();
    e.pos = 1'600'000'000'000'000ull + i;
    e.key = KeyOf(e.entity);
    e.doc = DocOf(e.entity, ++versions[e.entity]);
  }
  if (c.late_fraction > 0 && c.displacement > 0) {
    std::mt19937_64 rng(c.seed + 1);
    std::bernoulli_distribution late(c.late_fraction);
    std::vector<std::pair<double, uint64_t>> arrival(c.events);
    for (uint64_t i = 0; i < c.events; ++i) {
      arrival[i] = {late(rng) ? i + c.displacement + 0.5 : double(i), i};
    }
    std::sort(arrival.begin(), arrival.end());
    std::vector<Ev> reordered;
    reordered.reserve(c.events);
    for (auto& [at, i] : arrival) reordered.push_back(std::move(out[i]));
    out = std::move(reordered);
  }
  return out;
}

// W5's log: every entity gets `versions` versions, written round by round
// (all entities' version 1, then version 2, ...).
std::vector<Ev> MakeVersionedLog(const Config& c) {
  std::vector<Ev> out;
  out.reserve(c.entities * c.versions);
  uint64_t i = 0;
  for (uint64_t v = 1; v <= c.versions; ++v) {
    for (uint64_t e = 0; e < c.entities; ++e, ++i) {
      out.push_back({e, 1'600'000'000'000'000ull + i, KeyOf(e), DocOf(e, v)});
    }
  }
  return out;
}

uint64_t LogicalBytes(std::span<const Ev> evs) {
  uint64_t n = 0;
  for (const Ev& e : evs) n += e.key.size() + e.doc.size();
  return n;
}

// ---------------------------------------------------------------------------
// Systems.

// One producer's connection.
class Writer {
 public:
  virtual ~Writer() = default;
  // Writes and commits one batch (atomically where the system can), returning
  // when it is acknowledged.
  virtual void Write(std::span<const Ev> batch) = 0;
  // Pipelined systems (cairn-grpc) queue; Flush waits for every ack. Latency
  // of a pipelined batch is recorded through `latencies` when set.
  virtual void Flush() {}
};

class System {
 public:
  virtual ~System() = default;
  virtual std::unique_ptr<Writer> NewWriter(bool durable) = 0;
  // W5: entities as of the `seq`-th event (1-based; the system's own
  // position of that event). Calls `row` per entity; returns the count.
  virtual uint64_t SnapshotAsOf(uint64_t event_index, const std::function<void()>& row) = 0;
  // W9: reads every change from the start, in order; returns the count.
  virtual uint64_t CatchUp(uint64_t expected) = 0;
  // W6: the current document of `key`, empty when absent.
  virtual std::string Current(const std::string& key) = 0;
  // W4: a subscriber that calls `on_doc` with each new change's document.
  virtual std::unique_ptr<class Listener> NewListener() = 0;
  // W8: makes the on-disk size settle (compaction / vacuum / checkpoint).
  virtual void Compact() {}
  // What the system reports of its own writes (cairn: records and bytes).
  virtual void Extra(rapidjson::Writer<rapidjson::StringBuffer>&) {}
};

class Listener {
 public:
  virtual ~Listener() = default;
  // Waits for changes until `deadline_ns`, calling on_doc per change.
  virtual void Run(int64_t deadline_ns, const std::function<void(std::string_view)>& on_doc) = 0;
  virtual void Stop() {}
};

// Finds `"t":N` in a document (W4).
int64_t SendTimeOf(std::string_view doc) {
  // PostgreSQL's jsonb text has a space after the colon.
  size_t at = doc.find("\"t\":");
  if (at == std::string_view::npos) return 0;
  at += 4;
  while (at < doc.size() && doc[at] == ' ') ++at;
  return std::strtoll(std::string(doc.substr(at, 24)).c_str(), nullptr, 10);
}

std::vector<cairn::Event> ToCairn(std::span<const Ev> batch) {
  std::vector<cairn::Event> out(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    cairn::Event& e = out[i];
    e.source = kSource;
    e.collection = kCollection;
    e.key = "\"" + batch[i].key + "\"";
    e.position = {batch[i].pos, 0};
    e.payload = batch[i].doc;
  }
  return out;
}

// Store and Client share the shapes of Snapshot and Subscription::Next.
template <class StoreOrClient>
uint64_t SnapshotVia(StoreOrClient& s, uint64_t seq, const std::function<void()>& row) {
  uint64_t n = 0;
  cairn::SnapshotOptions o;
  o.as_of_seq = seq;  // one change per event: seq == event index
  auto st = s.Snapshot(o, [&](const cairn::Entity&) {
    row();
    ++n;
    return true;
  });
  if (!st.ok()) Die(st.ToString());
  return n;
}

template <class Sub>
uint64_t DrainChanges(Sub& sub, uint64_t expected) {
  uint64_t n = 0;
  cairn::SubscriptionItem item;
  while (n < expected) {
    auto r = sub.Next(absl::Seconds(10), &item);
    if (!r.ok()) Die(r.status().ToString());
    if (!*r) Die("catch-up stalled");
    if (item.kind == cairn::SubscriptionItem::Kind::kChange) ++n;
  }
  return n;
}

template <class Sub>
void ListenUntil(Sub& sub, int64_t deadline, const std::function<void(std::string_view)>& on_doc) {
  cairn::SubscriptionItem item;
  while (NowNs() < deadline) {
    auto r = sub.Next(absl::Milliseconds(100), &item);
    if (!r.ok()) return;
    if (*r && item.kind == cairn::SubscriptionItem::Kind::kChange) on_doc(item.change.after);
  }
}

// --- cairn, embedded: Store::Ingest per batch, default Options.
class CairnEmbedded : public System {
 public:
  explicit CairnEmbedded(const Config& c) {
    std::filesystem::create_directories(c.dir);
    auto s = cairn::Store::Open(c.dir, {});
    if (!s.ok()) Die(s.status().ToString());
    store_ = std::move(*s);
  }
  std::unique_ptr<Writer> NewWriter(bool durable) override {
    struct W : Writer {
      cairn::Store* store;
      bool durable;
      void Write(std::span<const Ev> batch) override {
        auto r = store->Ingest(ToCairn(batch), {.durable = durable});
        if (!r.ok()) Die(r.status().ToString());
      }
    };
    auto w = std::make_unique<W>();
    w->store = store_.get();
    w->durable = durable;
    return w;
  }
  uint64_t SnapshotAsOf(uint64_t event_index, const std::function<void()>& row) override {
    return SnapshotVia(*store_, event_index, row);
  }
  uint64_t CatchUp(uint64_t expected) override {
    cairn::SubscribeOptions o;
    o.start = cairn::SubscribeOptions::Start::kFromSeq;
    auto sub = store_->Subscribe(o);
    if (!sub.ok()) Die(sub.status().ToString());
    return DrainChanges(**sub, expected);
  }
  std::string Current(const std::string& key) override {
    auto e = store_->Get(kCollection, "\"" + key + "\"");
    return e.ok() ? e->document : "";
  }
  std::unique_ptr<Listener> NewListener() override {
    struct L : Listener {
      std::unique_ptr<cairn::Subscription> sub;
      void Run(int64_t deadline, const std::function<void(std::string_view)>& on_doc) override {
        ListenUntil(*sub, deadline, on_doc);
      }
    };
    auto l = std::make_unique<L>();
    auto sub = store_->Subscribe(cairn::SubscribeOptions{});
    if (!sub.ok()) Die(sub.status().ToString());
    l->sub = std::move(*sub);
    return l;
  }
  void Compact() override {
    auto s = store_->CompactNow();
    if (!s.ok()) Die(s.ToString());
  }
  void Extra(rapidjson::Writer<rapidjson::StringBuffer>& w) override {
    cairn::StoreStats s = store_->Stats();
    w.Key("commits");
    w.Uint64(s.commits);
    w.Key("records_written");
    w.Uint64(s.records_written);
    w.Key("bytes_written");
    w.Uint64(s.bytes_written);
  }

 private:
  std::unique_ptr<cairn::Store> store_;
};

// --- cairn over gRPC: one pipelined IngestStream per producer, `window`
// messages in flight (what `cairn ingest` does).
class CairnGrpc : public System {
 public:
  explicit CairnGrpc(const Config& c) : c_(c) { client_ = Connect(); }
  std::unique_ptr<cairn::client::Client> Connect() {
    auto cl = cairn::client::Client::Connect({.target = c_.addr});
    if (!cl.ok()) Die(cl.status().ToString());
    return std::move(*cl);
  }
  std::unique_ptr<Writer> NewWriter(bool durable) override {
    struct W : Writer {
      std::unique_ptr<cairn::client::Client> client;
      std::unique_ptr<cairn::client::IngestStream> stream;
      bool durable;
      size_t window, in_flight = 0;
      void Write(std::span<const Ev> batch) override {
        if (in_flight == window) Receive();
        if (auto s = stream->Send(ToCairn(batch), durable); !s.ok()) Die(s.ToString());
        ++in_flight;
      }
      void Receive() {
        auto r = stream->Receive();
        if (!r.ok()) Die(r.status().ToString());
        --in_flight;
      }
      void Flush() override {
        while (in_flight > 0) Receive();
      }
      ~W() override { stream->Close().IgnoreError(); }
    };
    auto w = std::make_unique<W>();
    w->client = Connect();
    auto st = w->client->OpenIngestStream(false);
    if (!st.ok()) Die(st.status().ToString());
    w->stream = std::move(*st);
    w->durable = durable;
    w->window = c_.window;
    return w;
  }
  uint64_t SnapshotAsOf(uint64_t event_index, const std::function<void()>& row) override {
    return SnapshotVia(*client_, event_index, row);
  }
  uint64_t CatchUp(uint64_t expected) override {
    cairn::client::SubscribeStart start{.kind = cairn::client::SubscribeStart::Kind::kFromSeq};
    auto sub = client_->Subscribe({}, start);
    if (!sub.ok()) Die(sub.status().ToString());
    uint64_t n = DrainChanges(**sub, expected);
    (*sub)->Cancel();
    return n;
  }
  std::string Current(const std::string& key) override {
    auto e = client_->Get(kCollection, "\"" + key + "\"");
    return e.ok() ? e->document : "";
  }
  std::unique_ptr<Listener> NewListener() override {
    struct L : Listener {
      std::unique_ptr<cairn::client::Client> client;
      std::unique_ptr<cairn::client::ClientSubscription> sub;
      void Run(int64_t deadline, const std::function<void(std::string_view)>& on_doc) override {
        ListenUntil(*sub, deadline, on_doc);
        sub->Cancel();
      }
    };
    auto l = std::make_unique<L>();
    l->client = Connect();
    auto sub = l->client->Subscribe({}, {});
    if (!sub.ok()) Die(sub.status().ToString());
    l->sub = std::move(*sub);
    // The subscription is registered once the first Next returns (kNow).
    cairn::SubscriptionItem item;
    (void)l->sub->Next(absl::Milliseconds(200), &item);
    return l;
  }
  void Compact() override {
    if (auto s = client_->Compact(); !s.ok()) Die(s.ToString());
  }

 private:
  Config c_;
  std::unique_ptr<cairn::client::Client> client_;
};

// --- PostgreSQL 15 through libpq. Schema: events (seq bigserial primary
// key, key, pos, doc jsonb) with an index on (key, seq) for history and
// as-of queries, and state (key primary key, pos, seq, doc jsonb). A batch
// is one statement (so one transaction and one round trip): the events
// arrive as three array parameters, are inserted into events, and the
// newest of each key is upserted into state unless state already holds a
// newer position (late events keep the newest, as cairn's fold does).
// synchronous_commit is off for non-durable runs (commits are not waited
// for, nothing is lost but the last ~200 ms on a crash: cairn's non-durable
// ingest gives the same) and on for durable ones. Server settings: bench/run.
class Postgres : public System {
 public:
  explicit Postgres(const Config& c) : c_(c) {
    conn_ = Connect(false);
    Exec(conn_,
         "CREATE TABLE IF NOT EXISTS events (seq bigserial PRIMARY KEY, key text NOT NULL, "
         "pos bigint NOT NULL, doc jsonb NOT NULL);"
         "CREATE INDEX IF NOT EXISTS events_key_seq ON events (key, seq);"
         "CREATE TABLE IF NOT EXISTS state (key text PRIMARY KEY, pos bigint NOT NULL, "
         "seq bigint NOT NULL, doc jsonb NOT NULL);");
  }
  ~Postgres() override { PQfinish(conn_); }

  PGconn* Connect(bool durable) {
    PGconn* conn = PQconnectdb(c_.pg.c_str());
    if (PQstatus(conn) != CONNECTION_OK) Die(std::string("postgres: ") + PQerrorMessage(conn));
    Exec(conn, durable ? "SET synchronous_commit = on" : "SET synchronous_commit = off");
    return conn;
  }
  static void Exec(PGconn* conn, const char* sql) {
    PGresult* r = PQexec(conn, sql);
    auto st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      Die(std::string("postgres: ") + PQerrorMessage(conn));
    }
    PQclear(r);
  }
  // A text array literal: {"a","b"} with " and \ escaped.
  static void AppendArrayItem(std::string* out, std::string_view v) {
    if (out->size() > 1) out->push_back(',');
    out->push_back('"');
    for (char ch : v) {
      if (ch == '"' || ch == '\\') out->push_back('\\');
      out->push_back(ch);
    }
    out->push_back('"');
  }

  static constexpr char kIngest[] =
      "WITH b AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) AS t(key, pos, doc)),"
      " e AS (INSERT INTO events (key, pos, doc) SELECT key, pos, doc FROM b"
      " RETURNING seq, key, pos, doc)"
      " INSERT INTO state (key, pos, seq, doc)"
      " SELECT DISTINCT ON (key) key, pos, seq, doc FROM e ORDER BY key, pos DESC, seq DESC"
      " ON CONFLICT (key) DO UPDATE SET pos = excluded.pos, seq = excluded.seq, doc = excluded.doc"
      " WHERE state.pos <= excluded.pos";

  std::unique_ptr<Writer> NewWriter(bool durable) override {
    struct W : Writer {
      PGconn* conn = nullptr;
      std::string keys, poss, docs;
      void Write(std::span<const Ev> batch) override {
        keys = "{", poss = "{", docs = "{";
        for (const Ev& e : batch) {
          AppendArrayItem(&keys, e.key);
          AppendArrayItem(&poss, std::to_string(e.pos));
          AppendArrayItem(&docs, e.doc);
        }
        keys += "}", poss += "}", docs += "}";
        const char* params[3] = {keys.c_str(), poss.c_str(), docs.c_str()};
        PGresult* r = PQexecPrepared(conn, "ingest", 3, params, nullptr, nullptr, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
          Die(std::string("postgres: ") + PQerrorMessage(conn));
        PQclear(r);
      }
      ~W() override { PQfinish(conn); }
    };
    auto w = std::make_unique<W>();
    w->conn = Connect(durable);
    PGresult* r = PQprepare(w->conn, "ingest", kIngest, 3, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
      Die(std::string("postgres: ") + PQerrorMessage(w->conn));
    PQclear(r);
    return w;
  }
  // DISTINCT ON over the (key, seq) index: the newest version per key at
  // or before the seq; streamed in single-row mode for time to first row.
  uint64_t SnapshotAsOf(uint64_t event_index, const std::function<void()>& row) override {
    std::string sql = "SELECT DISTINCT ON (key) key, doc FROM events WHERE seq <= " +
                      std::to_string(event_index) + " ORDER BY key, seq DESC";
    return Stream(sql, row);
  }
  uint64_t Stream(const std::string& sql, const std::function<void()>& row) {
    if (!PQsendQuery(conn_, sql.c_str())) Die(PQerrorMessage(conn_));
    PQsetSingleRowMode(conn_);
    uint64_t n = 0;
    while (PGresult* r = PQgetResult(conn_)) {
      auto st = PQresultStatus(r);
      if (st == PGRES_SINGLE_TUPLE) {
        row();
        ++n;
      } else if (st != PGRES_TUPLES_OK) {
        Die(std::string("postgres: ") + PQerrorMessage(conn_));
      }
      PQclear(r);
    }
    return n;
  }
  // Keyset pagination over the events table, 1000 rows a page.
  uint64_t CatchUp(uint64_t expected) override {
    uint64_t n = 0, last = 0;
    while (n < expected) {
      std::string sql = "SELECT seq, key, doc FROM events WHERE seq > " + std::to_string(last) +
                        " ORDER BY seq LIMIT 1000";
      PGresult* r = PQexec(conn_, sql.c_str());
      if (PQresultStatus(r) != PGRES_TUPLES_OK) Die(PQerrorMessage(conn_));
      int rows = PQntuples(r);
      if (rows == 0) Die("postgres catch-up: fewer rows than expected");
      last = std::strtoull(PQgetvalue(r, rows - 1, 0), nullptr, 10);
      n += rows;
      PQclear(r);
    }
    return n;
  }
  std::string Current(const std::string& key) override {
    const char* params[1] = {key.c_str()};
    PGresult* r = PQexecParams(conn_, "SELECT doc::text FROM state WHERE key = $1", 1, nullptr,
                               params, nullptr, nullptr, 0);
    std::string out = PQntuples(r) ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }
  // LISTEN/NOTIFY: a trigger notifies each inserted event's document.
  std::unique_ptr<Listener> NewListener() override {
    Exec(conn_,
         "CREATE OR REPLACE FUNCTION notify_event() RETURNS trigger AS $$ BEGIN "
         "PERFORM pg_notify('events', NEW.doc::text); RETURN NULL; END $$ LANGUAGE plpgsql;"
         "DROP TRIGGER IF EXISTS events_notify ON events;"
         "CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW "
         "EXECUTE FUNCTION notify_event();");
    struct L : Listener {
      PGconn* conn;
      void Run(int64_t deadline, const std::function<void(std::string_view)>& on_doc) override {
        int fd = PQsocket(conn);
        while (NowNs() < deadline) {
          fd_set set;
          FD_ZERO(&set);
          FD_SET(fd, &set);
          timeval tv{0, 100000};
          if (select(fd + 1, &set, nullptr, nullptr, &tv) < 0) return;
          PQconsumeInput(conn);
          while (PGnotify* n = PQnotifies(conn)) {
            on_doc(n->extra);
            PQfreemem(n);
          }
        }
      }
      ~L() override { PQfinish(conn); }
    };
    auto l = std::make_unique<L>();
    l->conn = Connect(false);
    Exec(l->conn, "LISTEN events");
    return l;
  }
  // VACUUM runs outside a transaction block: one statement per call.
  // The tables and their indexes (the cluster's WAL and catalog are not
  // the data: du of the directory would count them).
  void Extra(rapidjson::Writer<rapidjson::StringBuffer>& w) override {
    PGresult* r =
        PQexec(conn_, "SELECT pg_total_relation_size('events') + pg_total_relation_size('state')");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      w.Key("store_bytes");
      w.Uint64(std::strtoull(PQgetvalue(r, 0, 0), nullptr, 10));
    }
    PQclear(r);
  }
  void Compact() override {
    for (const char* sql : {"VACUUM FULL events", "VACUUM FULL state", "CHECKPOINT"})
      Exec(conn_, sql);
  }

 private:
  Config c_;
  PGconn* conn_;
};

// --- SQLite 3 through its C API, WAL mode. Same schema as PostgreSQL; a
// batch is one transaction of prepared inserts and upserts. synchronous =
// OFF for non-durable runs, FULL (fsync of the WAL at every commit) for
// durable ones; a 256 MiB page cache like cairn's block cache. One writer at
// a time (SQLite's model): concurrent producers wait on a busy timeout.
class Sqlite : public System {
 public:
  explicit Sqlite(const Config& c) : path_(c.dir + "/bench.db") {
    std::filesystem::create_directories(c.dir);
    db_ = Open(false);
    Exec(db_,
         "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, "
         "pos INTEGER NOT NULL, doc TEXT NOT NULL);"
         "CREATE INDEX IF NOT EXISTS events_key_seq ON events (key, seq);"
         "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, pos INTEGER NOT NULL, "
         "seq INTEGER NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID;");
  }
  ~Sqlite() override { sqlite3_close(db_); }
  sqlite3* Open(bool durable) {
    sqlite3* db = nullptr;
    if (sqlite3_open(path_.c_str(), &db) != SQLITE_OK) Die(sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 60000);
    Exec(db, "PRAGMA journal_mode = WAL; PRAGMA cache_size = -262144;");
    Exec(db, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = OFF");
    return db;
  }
  static void Exec(sqlite3* db, const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      Die(std::string("sqlite: ") + (err ? err : "?"));
    }
  }
  static sqlite3_stmt* Prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) Die(sqlite3_errmsg(db));
    return st;
  }
  std::unique_ptr<Writer> NewWriter(bool durable) override {
    struct W : Writer {
      sqlite3* db;
      sqlite3_stmt *begin, *commit, *insert, *upsert;
      void Write(std::span<const Ev> batch) override {
        Step(begin);
        for (const Ev& e : batch) {
          sqlite3_bind_text(insert, 1, e.key.data(), e.key.size(), SQLITE_STATIC);
          sqlite3_bind_int64(insert, 2, e.pos);
          sqlite3_bind_text(insert, 3, e.doc.data(), e.doc.size(), SQLITE_STATIC);
          Step(insert);
          int64_t seq = sqlite3_last_insert_rowid(db);
          sqlite3_bind_text(upsert, 1, e.key.data(), e.key.size(), SQLITE_STATIC);
          sqlite3_bind_int64(upsert, 2, e.pos);
          sqlite3_bind_int64(upsert, 3, seq);
          sqlite3_bind_text(upsert, 4, e.doc.data(), e.doc.size(), SQLITE_STATIC);
          Step(upsert);
        }
        Step(commit);
      }
      void Step(sqlite3_stmt* st) {
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) Die(std::string("sqlite: ") + sqlite3_errmsg(db));
        sqlite3_reset(st);
      }
      ~W() override {
        for (auto* st : {begin, commit, insert, upsert}) sqlite3_finalize(st);
        sqlite3_close(db);
      }
    };
    auto w = std::make_unique<W>();
    w->db = Open(durable);
    w->begin = Prepare(w->db, "BEGIN IMMEDIATE");
    w->commit = Prepare(w->db, "COMMIT");
    w->insert = Prepare(w->db, "INSERT INTO events (key, pos, doc) VALUES (?, ?, ?)");
    w->upsert = Prepare(w->db,
                        "INSERT INTO state (key, pos, seq, doc) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET pos = excluded.pos, seq = excluded.seq, "
                        "doc = excluded.doc WHERE excluded.pos >= state.pos");
    return w;
  }
  // The row with the greatest seq per key at or before the seq (SQLite's
  // bare-column max() rule), over the (key, seq) index.
  uint64_t SnapshotAsOf(uint64_t event_index, const std::function<void()>& row) override {
    sqlite3_stmt* st = Prepare(
        db_, "SELECT key, doc, max(seq) FROM events WHERE seq <= ? GROUP BY key ORDER BY key");
    sqlite3_bind_int64(st, 1, event_index);
    uint64_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
      row();
      ++n;
    }
    sqlite3_finalize(st);
    return n;
  }
  uint64_t CatchUp(uint64_t expected) override {
    sqlite3_stmt* st =
        Prepare(db_, "SELECT seq, key, doc FROM events WHERE seq > ? ORDER BY seq LIMIT 1000");
    uint64_t n = 0, last = 0;
    while (n < expected) {
      sqlite3_bind_int64(st, 1, last);
      uint64_t page = 0;
      while (sqlite3_step(st) == SQLITE_ROW) {
        last = sqlite3_column_int64(st, 0);
        ++page;
      }
      sqlite3_reset(st);
      if (page == 0) Die("sqlite catch-up: fewer rows than expected");
      n += page;
    }
    sqlite3_finalize(st);
    return n;
  }
  std::string Current(const std::string& key) override {
    sqlite3_stmt* st = Prepare(db_, "SELECT doc FROM state WHERE key = ?");
    sqlite3_bind_text(st, 1, key.data(), key.size(), SQLITE_STATIC);
    std::string out;
    if (sqlite3_step(st) == SQLITE_ROW)
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
  }
  std::unique_ptr<Listener> NewListener() override { Die("sqlite has no subscriptions"); }
  void Compact() override { Exec(db_, "PRAGMA wal_checkpoint(TRUNCATE); VACUUM;"); }

 private:
  std::string path_;
  sqlite3* db_;
};

// --- Redis 7 through hiredis. A batch is MULTI, per event XADD to the
// stream `events` (fields k, p, d) and HSET of the document into the hash
// `state`, EXEC: pipelined, one round trip. Redis keeps no ordering check:
// a late event overwrites newer state (W6 does not run on it). Durability is
// the AOF: appendfsync everysec for non-durable runs, always for durable
// ones (bench/run starts the server accordingly).
class Redis : public System {
 public:
  explicit Redis(const Config& c) : c_(c) { ctx_ = Connect(); }
  ~Redis() override { redisFree(ctx_); }
  redisContext* Connect() {
    redisContext* ctx = redisConnect("127.0.0.1", c_.redis_port);
    if (!ctx || ctx->err) Die(std::string("redis: ") + (ctx ? ctx->errstr : "no context"));
    return ctx;
  }
  static redisReply* Reply(redisContext* ctx) {
    void* r = nullptr;
    if (redisGetReply(ctx, &r) != REDIS_OK) Die(std::string("redis: ") + ctx->errstr);
    auto* reply = static_cast<redisReply*>(r);
    if (reply->type == REDIS_REPLY_ERROR) Die(std::string("redis: ") + reply->str);
    return reply;
  }
  std::unique_ptr<Writer> NewWriter(bool) override {
    struct W : Writer {
      redisContext* ctx;
      void Write(std::span<const Ev> batch) override {
        redisAppendCommand(ctx, "MULTI");
        for (const Ev& e : batch) {
          std::string pos = std::to_string(e.pos);
          redisAppendCommand(ctx, "XADD events * k %b p %b d %b", e.key.data(), e.key.size(),
                             pos.data(), pos.size(), e.doc.data(), e.doc.size());
          redisAppendCommand(ctx, "HSET state %b %b", e.key.data(), e.key.size(), e.doc.data(),
                             e.doc.size());
        }
        redisAppendCommand(ctx, "EXEC");
        for (size_t i = 0; i < 2 * batch.size() + 2; ++i) freeReplyObject(Reply(ctx));
      }
      ~W() override { redisFree(ctx); }
    };
    auto w = std::make_unique<W>();
    w->ctx = Connect();
    return w;
  }
  uint64_t SnapshotAsOf(uint64_t, const std::function<void()>&) override {
    Die("redis has no snapshot as of a position");
  }
  // XREAD COUNT 1000 from the start of the stream.
  uint64_t CatchUp(uint64_t expected) override {
    uint64_t n = 0;
    std::string last = "0-0";
    while (n < expected) {
      auto* r = static_cast<redisReply*>(
          redisCommand(ctx_, "XREAD COUNT 1000 STREAMS events %s", last.c_str()));
      if (!r || r->type != REDIS_REPLY_ARRAY || r->elements == 0) Die("redis catch-up: no rows");
      redisReply* entries = r->element[0]->element[1];
      if (entries->elements == 0) Die("redis catch-up: fewer rows than expected");
      last = entries->element[entries->elements - 1]->element[0]->str;
      n += entries->elements;
      freeReplyObject(r);
    }
    return n;
  }
  std::string Current(const std::string& key) override {
    auto* r = static_cast<redisReply*>(redisCommand(ctx_, "HGET state %b", key.data(), key.size()));
    std::string out = r && r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : "";
    freeReplyObject(r);
    return out;
  }
  // XREAD BLOCK from the newest entry on.
  std::unique_ptr<Listener> NewListener() override {
    struct L : Listener {
      redisContext* ctx;
      std::string last = "$";
      void Run(int64_t deadline, const std::function<void(std::string_view)>& on_doc) override {
        while (NowNs() < deadline) {
          auto* r = static_cast<redisReply*>(
              redisCommand(ctx, "XREAD BLOCK 100 COUNT 1000 STREAMS events %s", last.c_str()));
          if (!r) return;
          if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
            redisReply* entries = r->element[0]->element[1];
            for (size_t i = 0; i < entries->elements; ++i) {
              redisReply* fields = entries->element[i]->element[1];
              on_doc(std::string_view(fields->element[5]->str, fields->element[5]->len));
            }
            if (entries->elements) last = entries->element[entries->elements - 1]->element[0]->str;
          }
          freeReplyObject(r);
        }
      }
      ~L() override { redisFree(ctx); }
    };
    auto l = std::make_unique<L>();
    l->ctx = Connect();
    // "$" is "after the newest entry now": pin it to an id so no entry
    // between two XREADs is missed.
    auto* r = static_cast<redisReply*>(redisCommand(l->ctx, "XADD events * k init p 0 d {}"));
    l->last = r->str;
    freeReplyObject(r);
    return l;
  }
  void Compact() override {
    freeReplyObject(redisCommand(ctx_, "BGREWRITEAOF"));
    for (int i = 0; i < 600; ++i) {
      auto* r = static_cast<redisReply*>(redisCommand(ctx_, "INFO persistence"));
      bool busy = std::string_view(r->str, r->len).find("aof_rewrite_in_progress:1") !=
                  std::string_view::npos;
      freeReplyObject(r);
      if (!busy) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

 private:
  Config c_;
  redisContext* ctx_;
};

std::unique_ptr<System> MakeSystem(const Config& c) {
  if (c.system == "cairn") return std::make_unique<CairnEmbedded>(c);
  if (c.system == "cairn-grpc") return std::make_unique<CairnGrpc>(c);
  if (c.system == "postgres") return std::make_unique<Postgres>(c);
  if (c.system == "sqlite") return std::make_unique<Sqlite>(c);
  if (c.system == "redis") return std::make_unique<Redis>(c);
  Die("unknown system " + c.system + " (cairn, cairn-grpc, postgres, sqlite, redis)");
}

// ---------------------------------------------------------------------------
// Results.

struct Result {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w{buf};
  Result(const Config& c) {
    w.StartObject();
    Str("system", c.system);
    Str("workload", c.workload);
  }
  void Str(const char* k, const std::string& v) {
    w.Key(k);
    w.String(v.c_str());
  }
  void Num(const char* k, double v) {
    w.Key(k);
    w.Double(std::isfinite(v) ? v : 0);
  }
  void Int(const char* k, uint64_t v) {
    w.Key(k);
    w.Uint64(v);
  }
  void Print() {
    w.EndObject();
    std::cout << buf.GetString() << std::endl;
  }
};

double Percentile(std::vector<double>* v, double p) {
  if (v->empty()) return 0;
  size_t at = std::min(v->size() - 1, static_cast<size_t>(p * v->size()));
  std::nth_element(v->begin(), v->begin() + at, v->end());
  return (*v)[at];
}

// Ingests `evs` with c.producers writers (producer p takes every p-th batch)
// and reports rate, CPU, per-batch latency and disk writes.
void Ingest(const Config& c, System& sys, const std::vector<Ev>& evs, Result& out) {
  std::vector<std::unique_ptr<Writer>> writers;
  for (int p = 0; p < c.producers; ++p) writers.push_back(sys.NewWriter(c.durable));
  std::vector<std::vector<double>> lat(c.producers);
  const size_t batches = (evs.size() + c.batch - 1) / c.batch;
  double cpu0 = CpuSeconds();
  uint64_t wb0 = WriteBytes();
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int p = 0; p < c.producers; ++p) {
    threads.emplace_back([&, p] {
      for (size_t b = p; b < batches; b += c.producers) {
        size_t from = b * c.batch, n = std::min<size_t>(c.batch, evs.size() - from);
        auto s = Clock::now();
        writers[p]->Write(std::span(evs).subspan(from, n));
        lat[p].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
      }
      writers[p]->Flush();
    });
  }
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  double cpu = CpuSeconds() - cpu0;
  uint64_t wb = WriteBytes() - wb0;
  writers.clear();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  out.Int("events", evs.size());
  out.Num("seconds", secs);
  out.Num("events_per_s", evs.size() / secs);
  out.Num("client_cpu_us_per_event", cpu * 1e6 / evs.size());
  out.Int("client_write_bytes", wb);
  out.Int("logical_bytes", LogicalBytes(evs));
  // Pipelined writers (cairn-grpc) return before the ack: their per-call
  // time is not a commit latency.
  if (c.system != "cairn-grpc") {
    out.Num("p50_batch_us", Percentile(&all, 0.50));
    out.Num("p99_batch_us", Percentile(&all, 0.99));
  }
}

void RunIngest(const Config& c, Result& out) {
  auto sys = MakeSystem(c);
  auto evs = MakeEvents(c);
  Ingest(c, *sys, evs, out);
  sys->Extra(out.w);
  out.Int("peak_rss_bytes", RssBytes("VmHWM:"));
  out.Int("rss_bytes", RssBytes("VmRSS:"));
}

// W8: ingest, then settle the on-disk form; bench/run measures the directory.
void RunSpace(const Config& c, Result& out) {
  auto sys = MakeSystem(c);
  auto evs = MakeEvents(c);
  Ingest(c, *sys, evs, out);
  uint64_t wb0 = WriteBytes();
  sys->Compact();
  out.Int("compact_write_bytes", WriteBytes() - wb0);
  sys->Extra(out.w);
}

// W6: cairn's fold under late events; the end state is checked against the
// newest position of every entity (what a sorted replay leaves).
void RunLate(const Config& c, Result& out) {
  auto sys = MakeSystem(c);
  auto evs = MakeEvents(c);
  Ingest(c, *sys, evs, out);
  std::map<uint64_t, const Ev*> newest;
  for (const Ev& e : evs) {
    auto& slot = newest[e.entity];
    if (!slot || slot->pos < e.pos) slot = &e;
  }
  uint64_t wrong = 0;
  for (auto& [entity, e] : newest) {
    if (sys->Current(e->key) != e->doc) ++wrong;
  }
  out.Int("entities_checked", newest.size());
  out.Int("entities_wrong", wrong);
}

// W5: load entities × versions, then snapshots as of the end (latest), the
// middle and 10% of the log (early): time to first row and entities/s.
void RunSnapshot(const Config& c, Result& out) {
  auto sys = MakeSystem(c);
  auto evs = MakeVersionedLog(c);
  {
    Config load = c;
    load.producers = 1;
    Result ignored(c);
    Ingest(load, *sys, evs, ignored);
  }
  out.Int("entities", c.entities);
  out.Int("versions", c.versions);
  for (auto [name, fraction] : {std::pair{"latest", 1.0}, {"middle", 0.5}, {"early", 0.1}}) {
    uint64_t at = std::max<uint64_t>(1, static_cast<uint64_t>(evs.size() * fraction));
    int64_t t0 = NowNs(), first = 0;
    double cpu0 = CpuSeconds();
    uint64_t n = sys->SnapshotAsOf(at, [&] {
      if (!first) first = NowNs();
    });
    double secs = (NowNs() - t0) / 1e9;
    std::string p = name;
    out.Int((p + "_rows").c_str(), n);
    out.Num((p + "_seconds").c_str(), secs);
    out.Num((p + "_first_row_ms").c_str(), (first - t0) / 1e6);
    out.Num((p + "_entities_per_s").c_str(), n / secs);
    out.Num((p + "_client_cpu_s").c_str(), CpuSeconds() - cpu0);
  }
}

// W9: a backlog of c.events changes, read from the start.
void RunCatchUp(const Config& c, Result& out) {
  auto sys = MakeSystem(c);
  auto evs = MakeEvents(c);
  {
    Result ignored(c);
    Ingest(c, *sys, evs, ignored);
  }
  auto t0 = Clock::now();
  uint64_t n = sys->CatchUp(evs.size());
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  out.Int("changes", n);
  out.Num("seconds", secs);
  out.Num("changes_per_s", n / secs);
}

// W4: one producer writes single events at c.rate per second, each carrying
// its send time; c.subscribers listeners record receive - send.
void RunLatency(const Config& c, Result& out) {
  auto sys = MakeSystem(c);
  std::vector<std::unique_ptr<Listener>> listeners;
  for (int i = 0; i < c.subscribers; ++i) listeners.push_back(sys->NewListener());
  auto writer = sys->NewWriter(false);
  const int64_t start = NowNs() + 100'000'000;
  const int64_t end = start + static_cast<int64_t>(c.seconds * 1e9);
  std::vector<std::vector<double>> lat(c.subscribers);
  std::vector<std::thread> threads;
  for (int i = 0; i < c.subscribers; ++i) {
    threads.emplace_back([&, i] {
      listeners[i]->Run(end + 1'000'000'000, [&, i](std::string_view doc) {
        int64_t sent = SendTimeOf(doc);
        if (sent >= start) lat[i].push_back((NowNs() - sent) / 1e3);
      });
    });
  }
  const int64_t interval = static_cast<int64_t>(1e9 / c.rate);
  uint64_t sent = 0;
  EntityPicker pick(c);
  for (int64_t next = start; next < end; next += interval) {
    while (NowNs() < next) {
      if (next - NowNs() > 200'000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    uint64_t e = pick.Next();
    Ev ev{e, 1'600'000'000'000'000ull + sent, KeyOf(e), DocOf(e, sent, NowNs())};
    writer->Write(std::span(&ev, 1));
    ++sent;
  }
  writer->Flush();
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  out.Int("sent", sent);
  out.Num("achieved_rate", sent / c.seconds);
  out.Int("subscribers", c.subscribers);
  out.Int("received", all.size());
  out.Num("p50_us", Percentile(&all, 0.50));
  out.Num("p99_us", Percentile(&all, 0.99));
  out.Num("p999_us", Percentile(&all, 0.999));
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  CLI::App app("scoreboard: one workload against one system; prints one JSON object");
  app.add_option("system", c.system, "cairn | cairn-grpc | postgres | sqlite | redis")->required();
  app.add_option("workload", c.workload,
                 "ingest | memory | space | late | snapshot | catchup | latency")
      ->required();
  app.add_option("--dir", c.dir, "data directory (cairn, sqlite)");
  app.add_option("--addr", c.addr, "cairnd address (cairn-grpc)");
  app.add_option("--pg", c.pg, "libpq connection string (postgres)");
  app.add_option("--redis-port", c.redis_port, "Redis port on 127.0.0.1");
  app.add_option("--entities", c.entities, "distinct keys")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32));
  app.add_option("--events", c.events, "events to ingest")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 36));
  app.add_option("--batch", c.batch, "events per batch")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100000}));
  app.add_option("--producers", c.producers, "concurrent writers")->check(CLI::Range(1, 256));
  app.add_flag("--durable", c.durable, "every batch durable before it is acknowledged");
  app.add_option("--dist", c.dist, "uniform | zipf");
  app.add_option("--seed", c.seed, "generator seed");
  app.add_option("--versions", c.versions, "versions per entity (snapshot)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{10000}));
  app.add_option("--rate", c.rate, "events per second (latency)")->check(CLI::Range(1.0, 1e7));
  app.add_option("--subscribers", c.subscribers, "subscribers (latency)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--seconds", c.seconds, "duration (latency)")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--late-fraction", c.late_fraction, "share of late events (late)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--displacement", c.displacement, "how many events later a late event arrives");
  app.add_option("--window", c.window, "messages in flight per gRPC stream")
      ->check(CLI::Range(size_t{1}, size_t{4096}));
  CLI11_PARSE(app, argc, argv);

  Result out(c);
  if (c.workload == "ingest" || c.workload == "memory") {
    RunIngest(c, out);
  } else if (c.workload == "space") {
    RunSpace(c, out);
  } else if (c.workload == "late") {
    RunLate(c, out);
  } else if (c.workload == "snapshot") {
    RunSnapshot(c, out);
  } else if (c.workload == "catchup") {
    RunCatchUp(c, out);
  } else if (c.workload == "latency") {
    RunLatency(c, out);
  } else {
    Die("unknown workload " + c.workload);
  }
  out.Print();
  return 0;
}
