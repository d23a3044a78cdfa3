// cairnd's HTTP listener (http_server.h).
//
// Threads: one io_context run by two threads; a connection is a Session
// reading requests in turn (keep-alive). Handlers call the engine on the io
// threads, except those that may wait for an fsync (a durable ingest, a
// session's commit): they run on a pool of 8 threads and the answer goes
// back to the connection's strand. A pump thread wakes the SSE streams
// after each commit.
//
// Routes (README "HTTP API"):
//   GET  /healthz, /readyz
//   GET  /v1/entities/{collection}/{key}           the entity
//   GET  /v1/entities/{collection}/{key}/history   its versions
//   GET  /v1/subscribe?...                         Server-Sent Events
//   GET  /v1/snapshot?...                          NDJSON, streamed
//   GET  /v1/stats, /v1/sources[/{name}], /v1/connectors, /v1/sinks,
//        /v1/subscriptions
//   GET|PUT|DELETE /v1/checkpoints[/{name}]
//   POST /v1/ingest[?source=NAME][&durable=true]   canonical NDJSON events, or
//                                                  a payload in the registered
//                                                  source's format
//   GET  /v1/connector/{cid}/session/...           BitBroker's contribution API
//   GET  /metrics                                  Prometheus text format
//   GET  /, /console/{file}                        the web console
// {key} is the key's JSON text, percent-encoded (106, %22GB%22); a key that
// is not JSON is taken as a string (GB).
#include "http_server.h"

#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>
#include <map>
#include <optional>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "cairn/connectors.h"
#include "cairn/formats.h"
#include "cairn/json.h"
#include "cairn/json_writer.h"
#include "cairn/status.h"
#include "console_files.h"
#include "convert.h"
#include "dispatcher.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"
#include "spdlog/spdlog.h"

namespace cairn::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using namespace json_writer;  // NOLINT(build/namespaces)

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string location;  // a redirect's
  // GET /v1/subscribe: the stream to serve as Server-Sent Events.
  std::unique_ptr<Subscription> subscription;
  // GET /v1/snapshot: the entities to stream as NDJSON.
  std::unique_ptr<SnapshotCursor> cursor;
  absl::Duration heartbeat = absl::Seconds(15);
};

Reply Error(const absl::Status& s) { return {.status = HttpStatusOf(s), .body = ErrorJson(s)}; }

// {"<key>": [write_item(w, item) for each item]}: the list endpoints' body.
template <class Items, class Fn>
Reply ListReply(const char* key, const Items& items, Fn write_item) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  w.Key(key);
  w.StartArray();
  for (const auto& item : items) write_item(w, item);
  w.EndArray();
  w.EndObject();
  return {.body = Text(buf)};
}

// %XX decoding of one path segment or (with `plus_is_space`, as HTML forms
// and URLSearchParams write spaces) query value; nullopt when malformed.
std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space = false) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += plus_is_space && s[i] == '+' ? ' ' : s[i];
      continue;
    }
    int v = 0;
    if (i + 2 >= s.size()) return std::nullopt;
    for (int j = 1; j <= 2; ++j) {
      char c = s[i + j];
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + d;
    }
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

// A key from a path: its JSON text, or a bare word taken as a string.
std::string KeyOf(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (!d.HasParseError()) return text;
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  return Text(buf);
}

// One query parameter: its name, its percent-decoded value, and the text
// as sent (for error messages).
struct Param {
  std::string name;
  std::string value;
  std::string_view raw;
};

// The parameters of a query string, in order; INVALID_ARGUMENT for a
// malformed percent-encoding.
absl::StatusOr<std::vector<Param>> ParseQuery(std::string_view query) {
  std::vector<Param> out;
  for (absl::string_view kv : absl::StrSplit(AbslView(query), '&', absl::SkipEmpty())) {
    size_t eq = kv.find('=');
    auto value = PercentDecode(eq == kv.npos ? "" : StdView(kv.substr(eq + 1)), true);
    if (!value) return absl::InvalidArgumentError("query: malformed percent-encoding");
    if (kv.substr(0, eq) == "access_token") continue;  // taken by Router::Handle
    out.push_back({std::string(kv.substr(0, eq)), *std::move(value), StdView(kv)});
  }
  return out;
}

// One subscription item as an SSE event: `change` (id: its seq),
// `snapshot` (an entity), `snapshot_end` (id: N), `caught_up`.
std::string SseEvent(const SubscriptionItem& item) {
  std::string head, data;
  switch (item.kind) {
    case SubscriptionItem::Kind::kChange:
      head = absl::StrCat("id: ", item.change.seq, "\nevent: change\n");
      data = ChangeJson(item.change);
      break;
    case SubscriptionItem::Kind::kSnapshotEntity:
      head = "event: snapshot\n";
      data = EntityJson(item.entity);
      break;
    case SubscriptionItem::Kind::kSnapshotEnd:
      head = absl::StrCat("id: ", item.seq, "\nevent: snapshot_end\n");
      data = absl::StrCat("{\"seq\":", item.seq, "}");
      break;
    case SubscriptionItem::Kind::kCaughtUp:
      head = "event: caught_up\n";
      data = absl::StrCat("{\"seq\":", item.seq, "}");
      break;
  }
  return absl::StrCat(head, "data: ", data, "\n\n");
}

std::string JsonQuote(std::string_view text) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  return Text(buf);
}

std::string IngestJson(const IngestResult& r) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  Uints(w, {{"first_seq", r.first_seq},
            {"last_seq", r.last_seq},
            {"applied", r.applied},
            {"duplicates", r.duplicates},
            {"conflicts", r.conflicts}});
  w.EndObject();
  return Text(buf);
}

// An SSE stream as the pump thread sees it (a Session over TCP or TLS).
class SseStream {
 public:
  virtual ~SseStream() = default;
  // Sends what is ready; runs on the connection's strand (executor()).
  virtual void Pump() = 0;
  virtual bool done() const = 0;
  virtual uint64_t id() const = 0;
  // The seq the stream has taken from its subscription up to.
  virtual uint64_t delivered() const = 0;
  virtual net::any_io_executor executor() = 0;
};

// Where SSE sessions wait for commits: HttpServerImpl's pump thread.
class SseRegistry {
 public:
  virtual ~SseRegistry() = default;
  // Held until its connection ends.
  virtual void Add(std::shared_ptr<SseStream> s) = 0;
  // Each open stream's id and the seq it has delivered up to.
  virtual std::vector<std::pair<uint64_t, uint64_t>> Delivered() = 0;
};

class Router {
 public:
  Router(Deps* deps, Dispatcher* dispatcher, SseRegistry* registry)
      : deps_(deps), dispatcher_(dispatcher), registry_(registry) {}

  // Open SSE streams, within --max-subscriptions.
  void ReleaseStream() { streams_.fetch_sub(1); }

  struct Target {
    std::vector<std::string> segments;  // the path's, percent-decoded
    std::string_view query;             // as sent
  };
  static absl::StatusOr<Target> ParseTarget(const http::request<http::string_body>& req) {
    std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    Target t;
    if (path.size() < target.size()) t.query = target.substr(path.size() + 1);
    for (absl::string_view s : absl::StrSplit(AbslView(path), '/', absl::SkipEmpty())) {
      auto d = PercentDecode(StdView(s));
      if (!d) return absl::InvalidArgumentError("path: malformed percent-encoding");
      t.segments.push_back(*std::move(d));
    }
    return t;
  }

  // Whether the request for `t` may wait for an fsync: a durable ingest
  // (asked for, or cairnd's --durable), a session's close with commit.
  bool MayWaitForDisk(const Target& t) const {
    const std::vector<std::string>& seg = t.segments;
    if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "ingest") {
      bool durable = deps_->options->durable;
      auto params = ParseQuery(t.query);
      for (const Param& p : params.ok() ? *params : std::vector<Param>()) {
        if (p.name == "durable") durable = p.value == "true" || p.value == "1";
      }
      return durable;
    }
    return seg.size() == 7 && seg[1] == "connector" && seg[5] == "close" && seg[6] == "true";
  }

  // Set by the listener: it is bound to a loopback address.
  void set_loopback(bool loopback) { loopback_ = loopback; }

  // `target` is ParseTarget(req)'s.
  Reply Handle(const http::request<http::string_body>& req, const Target& target, Caller caller) {
    std::optional<std::string> last_event_id;
    if (auto it = req.find("Last-Event-ID"); it != req.end()) {
      last_event_id = std::string(it->value());
    }
    if (auto s = CheckSameOrigin(req); !s.ok()) return Error(s);
    const std::vector<std::string>& seg = target.segments;
    std::string_view query = target.query;
    bool get = req.method() == http::verb::get;
    bool post = req.method() == http::verb::post;
    if (!caller.authorization && get) {
      // A browser's EventSource cannot send headers: GET requests may carry
      // the token as ?access_token= (README "HTTP API" on what that costs).
      for (absl::string_view kv : absl::StrSplit(AbslView(query), '&', absl::SkipEmpty())) {
        if (!absl::StartsWith(kv, "access_token=")) continue;
        auto token = PercentDecode(StdView(kv.substr(13)), true);
        if (token) caller.authorization = "Bearer " + *token;
      }
    }
    if (deps_->shutting_down.load())
      return Error(absl::UnavailableError("cairnd is shutting down"));
    if (seg.size() == 1 && seg[0] == "healthz" && get) {
      return {.content_type = "text/plain", .body = "ok\n"};
    }
    if (seg.size() == 1 && seg[0] == "metrics" && get) return Metrics(caller);
    if (seg.size() == 1 && seg[0] == "readyz" && get) {
      return {.content_type = "text/plain", .body = "ready\n"};
    }
    if (seg.empty() && get) {
      return {.status = 302,
              .content_type = "text/plain",
              .body = "/console/\n",
              .location = "/console/"};
    }
    if (seg.size() <= 2 && !seg.empty() && seg[0] == "console" && get) {
      return Console(seg.size() == 1 ? "index.html" : seg[1]);
    }
    if (seg.size() >= 2 && seg[0] == "v1") {
      if (seg[1] == "entities" && (seg.size() == 4 || (seg.size() == 5 && seg[4] == "history"))) {
        if (!get) return MethodNotAllowed("GET");
        return seg.size() == 4 ? GetEntity(caller, seg[2], seg[3])
                               : History(caller, seg[2], seg[3]);
      }
      if (seg[1] == "connector" && seg.size() >= 6 && seg[3] == "session") {
        return BitBroker(caller, seg, req.method(), req.body());
      }
      if (seg[1] == "snapshot" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Snapshot(caller, query);
      }
      if (seg[1] == "subscribe" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Subscribe(caller, query, last_event_id);
      }
      if (seg[1] == "stats" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Stats(caller);
      }
      if (seg[1] == "sources" && seg.size() <= 3) {
        if (!get) return MethodNotAllowed("GET");
        return Sources(caller, seg.size() == 3 ? &seg[2] : nullptr);
      }
      if (seg[1] == "checkpoints" && seg.size() <= 3) {
        return Checkpoints(caller, req.method(), seg.size() == 3 ? &seg[2] : nullptr, req.body());
      }
      if (seg[1] == "connectors" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Connectors(caller);
      }
      if (seg[1] == "sinks" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Sinks(caller);
      }
      if (seg[1] == "subscriptions" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Subscriptions(caller);
      }
      if (seg[1] == "ingest" && seg.size() == 2) {
        if (!post) return MethodNotAllowed("POST");
        return Ingest(caller, req.body(), query);
      }
    }
    std::string_view sent(req.target().data(), req.target().size());
    return Error(absl::NotFoundError(
        absl::StrCat("no such endpoint: ", AbslView(sent.substr(0, sent.find('?'))))));
  }

 private:
  // Browsers send any site's requests to cairnd too: a page elsewhere could
  // POST events or GET a BitBroker close/true (an <img>) with no token
  // needed when cairnd has none. Refused: a request a browser marks as
  // another site's (Sec-Fetch-Site), one whose Origin is not this server,
  // and, on a loopback listener, one whose Host is a name other than
  // localhost (DNS rebinding: a name of the attacker's pointing at
  // 127.0.0.1). Programs (curl, clients) send none of these headers.
  absl::Status CheckSameOrigin(const http::request<http::string_body>& req) const {
    std::string_view host;
    if (auto it = req.find(http::field::host); it != req.end()) {
      host = std::string_view(it->value().data(), it->value().size());
    }
    if (auto it = req.find("Sec-Fetch-Site"); it != req.end()) {
      std::string_view site(it->value().data(), it->value().size());
      if (site != "same-origin" && site != "none") {
        return absl::PermissionDeniedError(absl::StrCat(
            "refused a request from another site (Sec-Fetch-Site: ", AbslView(Excerpt(site)),
            "): cairnd answers its own console and programs, not other pages"));
      }
    }
    if (auto it = req.find(http::field::origin); it != req.end()) {
      std::string_view origin(it->value().data(), it->value().size());
      if (origin != absl::StrCat("http://", AbslView(host)) &&
          origin != absl::StrCat("https://", AbslView(host))) {
        return absl::PermissionDeniedError(absl::StrCat(
            "refused a request from origin ", AbslView(Excerpt(origin)), " (not this server)"));
      }
    }
    if (loopback_ && !host.empty()) {
      std::string_view name = host;
      if (name.front() == '[') {
        name = name.substr(1, name.find(']') - 1);
      } else if (size_t colon = name.rfind(':'); colon != std::string_view::npos) {
        name = name.substr(0, colon);
      }
      beast::error_code ec;
      net::ip::make_address(name, ec);
      if (ec && name != "localhost") {
        return absl::PermissionDeniedError(
            absl::StrCat("refused Host ", AbslView(Excerpt(host)),
                         ": a loopback listener answers only an IP address or localhost"));
      }
    }
    return absl::OkStatus();
  }

  static Reply MethodNotAllowed(std::string_view allowed) {
    Reply r = Error(absl::InvalidArgumentError(
        absl::StrCat("method not allowed here; use ", AbslView(allowed))));
    r.status = 405;
    return r;
  }

  Reply GetEntity(const Caller& caller, const std::string& collection, const std::string& key) {
    if (auto s = deps_->auth->CanRead(caller, "http.Get", {collection}); !s.ok()) return Error(s);
    auto e = deps_->store->Get(collection, KeyOf(key));
    if (!e.ok()) return Error(e.status());
    return {.body = EntityJson(*e)};
  }

  Reply History(const Caller& caller, const std::string& collection, const std::string& key) {
    if (auto s = deps_->auth->CanRead(caller, "http.History", {collection}); !s.ok()) {
      return Error(s);
    }
    std::string key_json = KeyOf(key);
    auto h = deps_->store->History(collection, key_json, {});
    if (!h.ok()) return Error(h.status());
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    Str(w, "collection", collection);
    Json(w, "key", key_json);
    w.Key("versions");
    w.StartArray();
    for (const Version& v : *h) {
      w.StartObject();
      w.Key("seq");
      w.Uint64(v.seq);
      Str(w, "op", OpName(v.op));
      PositionJson(w, v.position);
      Str(w, "source", v.source);
      w.Key("complete");
      w.Bool(v.complete);
      Json(w, "before", v.before);
      Json(w, "after", v.after);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return {.body = Text(buf)};
  }

  // BitBroker's contribution API, call for call (README "HTTP API"): the
  // connector id is the name of a registered source of format bitbroker;
  // records go to its default collection, or to a collection named after
  // it.
  //   GET  /v1/connector/{cid}/session/open/{stream|accrue|replace}
  //   POST /v1/connector/{cid}/session/{sid}/upsert   [{id, name, entity, instance}]
  //   POST /v1/connector/{cid}/session/{sid}/delete   ["id", ...]
  //   GET  /v1/connector/{cid}/session/{sid}/close/{true|false}
  Reply BitBroker(const Caller& caller, const std::vector<std::string>& seg, http::verb method,
                  const std::string& body) {
    const std::string& cid = seg[2];
    if (seg.size() == 6 && seg[4] == "open") {
      if (method != http::verb::get) return MethodNotAllowed("GET");
      static const std::map<std::string, SessionMode> kModes = {{"stream", SessionMode::kStream},
                                                                {"accrue", SessionMode::kAccrue},
                                                                {"replace", SessionMode::kReplace}};
      auto mode = kModes.find(seg[5]);
      if (mode == kModes.end()) {
        return Error(absl::InvalidArgumentError(absl::StrCat(
            "mode \"", Excerpt(seg[5]), "\" is not a session mode (stream, accrue, replace)")));
      }
      if (auto s = deps_->auth->CanWrite(caller, "http.SessionOpen", cid); !s.ok()) {
        return Error(s);
      }
      auto source = deps_->store->GetSource(cid);
      if (!source.ok()) return Error(source.status());
      if (source->format != "bitbroker") {
        return Error(absl::FailedPreconditionError(
            absl::StrCat("source ", cid, " has format ", source->format,
                         "; a connector is a bitbroker source")));
      }
      auto id = deps_->store->OpenSession(
          cid, source->default_collection.empty() ? cid : source->default_collection, mode->second);
      if (!id.ok()) return Error(id.status());
      return {.content_type = "text/plain", .body = *id};
    }
    const std::string& sid = seg[4];
    // The session, if it is an open session of this connector; anything
    // else is 403 and touches no session.
    if (auto s = deps_->auth->CanWrite(caller, "http.Session", cid); !s.ok()) return Error(s);
    auto not_open = [&](const absl::Status& why) {
      return Error(absl::PermissionDeniedError(
          absl::StrCat("session \"", Excerpt(sid), "\" is not an open session of connector ", cid,
                       why.ok() ? "" : absl::StrCat(": ", why.message()))));
    };
    // A closed session answers FAILED_PRECONDITION, an unknown one NOT_FOUND.
    auto session_error = [&](const absl::Status& s) {
      return absl::IsFailedPrecondition(s) || absl::IsNotFound(s) ? not_open(s) : Error(s);
    };
    auto info = deps_->store->GetSession(sid);
    if (!info.ok()) return not_open(info.status());
    if (info->source != cid) return not_open(absl::OkStatus());
    if (seg.size() == 6 && (seg[5] == "upsert" || seg[5] == "delete")) {
      if (method != http::verb::post) return MethodNotAllowed("POST");
      rapidjson::Document doc;
      doc.Parse(body.data(), body.size());
      if (doc.HasParseError() || !doc.IsArray()) {
        return Error(absl::InvalidArgumentError(
            seg[5] == "upsert"
                ? "body: must be a JSON array of records {id, name, entity, instance}"
                : "body: must be a JSON array of record ids"));
      }
      std::vector<std::string> ids;
      absl::StatusOr<std::vector<std::string>> keys;
      if (seg[5] == "upsert") {
        auto source = deps_->store->GetSource(cid);
        if (!source.ok()) return Error(source.status());
        auto events = formats::Decode(*source, body, {.collection = info->collection});
        if (!events.ok()) return Error(events.status());
        std::vector<SessionRecord> records;
        for (size_t i = 0; i < events->size(); ++i) {
          const rapidjson::Value* r =
              i < doc.Size() ? &doc[static_cast<rapidjson::SizeType>(i)] : nullptr;
          ids.push_back(r && r->IsObject() && r->HasMember("id") && (*r)["id"].IsString()
                            ? (*r)["id"].GetString()
                            : absl::StrCat(i));
          records.push_back({std::move((*events)[i].key), std::move((*events)[i].payload)});
        }
        keys = deps_->store->SessionUpsert(sid, std::move(records));
      } else {
        std::vector<std::string> delete_keys;
        for (rapidjson::SizeType i = 0; i < doc.Size(); ++i) {
          if (!doc[i].IsString()) {
            return Error(
                absl::InvalidArgumentError(absl::StrCat("record ", i, ": id: must be a string")));
          }
          ids.push_back(doc[i].GetString());
          delete_keys.push_back(JsonQuote(ids.back()));
        }
        keys = deps_->store->SessionDelete(sid, std::move(delete_keys));
      }
      if (!keys.ok()) return session_error(keys.status());
      // The report: each record's id and its key in the store.
      rapidjson::StringBuffer buf;
      Writer w(buf);
      w.StartObject();
      for (size_t i = 0; i < keys->size() && i < ids.size(); ++i) {
        w.Key(ids[i].data(), static_cast<rapidjson::SizeType>(ids[i].size()));
        rapidjson::Document k;
        k.Parse((*keys)[i].data(), (*keys)[i].size());
        if (k.IsString()) {
          w.String(k.GetString(), k.GetStringLength());
        } else {
          w.RawValue((*keys)[i].data(), (*keys)[i].size(), rapidjson::kObjectType);
        }
      }
      w.EndObject();
      return {.body = Text(buf)};
    }
    if (seg.size() == 7 && seg[5] == "close" && (seg[6] == "true" || seg[6] == "false")) {
      if (method != http::verb::get) return MethodNotAllowed("GET");
      auto r = deps_->store->CloseSession(sid, seg[6] == "true");
      if (!r.ok()) return session_error(r.status());
      return {.body = IngestJson(*r)};
    }
    return Error(
        absl::NotFoundError("no such BitBroker session call (upsert, delete, close/true|false)"));
  }

  // GET /v1/snapshot?collection=..&prefix=..&as_of_seq=N (or
  // as_of_timestamp=T[&as_of_tick=K])&include_incomplete=false
  Reply Snapshot(const Caller& caller, std::string_view query) {
    SnapshotOptions o;
    std::optional<uint64_t> timestamp, tick;
    auto params = ParseQuery(query);
    if (!params.ok()) return Error(params.status());
    for (const auto& [name, value, raw] : *params) {
      uint64_t n = 0;
      bool number = absl::SimpleAtoi(value, &n);
      if (name == "collection") {
        o.collection = value;
      } else if (name == "prefix") {
        o.key_prefix = value;
      } else if (name == "include_incomplete" && (value == "true" || value == "false")) {
        o.include_incomplete = value == "true";
      } else if (name == "as_of_seq" && number) {
        o.as_of_seq = n;
      } else if (name == "as_of_timestamp" && number) {
        timestamp = n;
      } else if (name == "as_of_tick" && number) {
        tick = n;
      } else {
        return Error(absl::InvalidArgumentError(absl::StrCat(
            "query: \"", Excerpt(raw),
            "\" is not a snapshot parameter (collection, prefix, as_of_seq, as_of_timestamp, "
            "as_of_tick: whole numbers; include_incomplete: true|false)")));
      }
    }
    if (tick && !timestamp) {
      return Error(absl::InvalidArgumentError("query: as_of_tick needs as_of_timestamp"));
    }
    if (timestamp) o.as_of_position = Position{*timestamp, tick.value_or(UINT64_MAX)};
    std::vector<std::string> collections;
    if (!o.collection.empty()) collections.push_back(o.collection);
    if (auto s = deps_->auth->CanRead(caller, "http.Snapshot", collections); !s.ok()) {
      return Error(s);
    }
    auto cursor = deps_->store->NewSnapshot(o);
    if (!cursor.ok()) return Error(cursor.status());
    Reply r;
    r.content_type = "application/x-ndjson";
    r.cursor = *std::move(cursor);
    return r;
  }

  // GET /v1/subscribe?collection=..&source=..&key=..&prefix=..&from=..
  // (now, beginning, snapshot or a seq; Last-Event-ID resumes after its seq)
  // &heartbeat_ms=..
  Reply Subscribe(const Caller& caller, std::string_view query,
                  const std::optional<std::string>& last_event_id) {
    SubscribeOptions o;
    int64_t heartbeat_ms = 15000;
    auto params = ParseQuery(query);
    if (!params.ok()) return Error(params.status());
    for (const auto& [name, value, raw] : *params) {
      if (name == "collection") {
        o.filter.collections.push_back(value);
      } else if (name == "source") {
        o.filter.sources.push_back(value);
      } else if (name == "key") {
        o.filter.keys.push_back(KeyOf(value));
      } else if (name == "prefix") {
        o.filter.key_prefix = value;
      } else if (name == "from") {
        if (value == "now") {
          o.start = SubscribeOptions::Start::kNow;
        } else if (value == "snapshot") {
          o.start = SubscribeOptions::Start::kSnapshot;
        } else if (value == "beginning") {
          o.start = SubscribeOptions::Start::kFromSeq;
          o.from_seq = 0;
        } else if (absl::SimpleAtoi(value, &o.from_seq)) {
          o.start = SubscribeOptions::Start::kFromSeq;
        } else {
          return Error(absl::InvalidArgumentError(absl::StrCat(
              "query: from=", Excerpt(value), " is not now, beginning, snapshot or a seq")));
        }
      } else if (name == "checkpoint") {
        auto cp = ReadableCheckpoint(deps_, caller, "http.Subscribe", value);
        if (!cp.ok()) return Error(cp.status());
        o.start = SubscribeOptions::Start::kFromSeq;
        o.from_seq = cp->seq;
      } else if (name == "heartbeat_ms") {
        if (!absl::SimpleAtoi(value, &heartbeat_ms) || heartbeat_ms < 100 ||
            heartbeat_ms > 600000) {
          return Error(absl::InvalidArgumentError("query: heartbeat_ms must be 100 to 600000"));
        }
      } else {
        return Error(absl::InvalidArgumentError(
            absl::StrCat("query: unknown parameter \"", Excerpt(name),
                         "\" (collection, source, key, prefix, from, checkpoint, heartbeat_ms)")));
      }
    }
    if (last_event_id) {
      // The browser's reconnect: everything after the last id it received.
      if (!absl::SimpleAtoi(*last_event_id, &o.from_seq)) {
        return Error(absl::InvalidArgumentError(
            absl::StrCat("Last-Event-ID: \"", Excerpt(*last_event_id), "\" is not a seq")));
      }
      o.start = SubscribeOptions::Start::kFromSeq;
    }
    if (auto s = deps_->auth->CanRead(caller, "http.Subscribe", o.filter.collections); !s.ok()) {
      return Error(s);
    }
    if (streams_.fetch_add(1) >= deps_->options->max_subscriptions) {
      streams_.fetch_sub(1);
      return Error(absl::ResourceExhaustedError(absl::StrCat(
          "too many subscriptions (--max-subscriptions ", deps_->options->max_subscriptions, ")")));
    }
    auto sub = deps_->store->Subscribe(o);
    if (!sub.ok()) {
      streams_.fetch_sub(1);
      return Error(sub.status());
    }
    Reply r;
    r.subscription = *std::move(sub);
    r.heartbeat = absl::Milliseconds(heartbeat_ms);
    return r;
  }

  // Prometheus text exposition format (version 0.0.4).
  Reply Metrics(const Caller& caller) {
    if (auto s = deps_->auth->CanAdmin(caller, "http.Metrics"); !s.ok()) return Error(s);
    StoreStats st = deps_->store->Stats();
    std::string out;
    auto family = [&](const char* name, const char* type, const char* help) {
      absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
    };
    auto label = [](std::string_view v) {  // escaped label value
      std::string e;
      for (char c : v) {
        if (c == '\\' || c == '"') e += '\\';
        if (c == '\n') {
          e += "\\n";
          continue;
        }
        e += c;
      }
      return e;
    };
    family("cairn_source_events_total", "counter",
           "Events ingested per source, by outcome (applied, duplicate, conflict).");
    for (const auto& [name, src] : st.sources) {
      for (auto [outcome, v] : {std::pair<const char*, uint64_t>{"accepted", src.accepted},
                                {"duplicate", src.duplicates},
                                {"conflict", src.conflicts}}) {
        absl::StrAppend(&out, "cairn_source_events_total{source=\"", label(name), "\",outcome=\"",
                        outcome, "\"} ", v, "\n");
      }
    }
    family("cairn_source_rejected_batches_total", "counter", "Batches rejected per source.");
    for (const auto& [name, src] : st.sources) {
      absl::StrAppend(&out, "cairn_source_rejected_batches_total{source=\"", label(name), "\"} ",
                      src.rejected_batches, "\n");
    }
    for (auto [name, type, help, v] :
         {std::tuple<const char*, const char*, const char*, uint64_t>{
              "cairn_last_seq", "gauge", "The last committed seq.", st.last_seq},
          {"cairn_oldest_seq", "gauge", "The oldest seq still answerable (retention).",
           st.oldest_seq},
          {"cairn_commits_total", "counter", "Ingest commits since cairnd started.", st.commits},
          {"cairn_records_written_total", "counter", "Records written by ingest commits.",
           st.records_written},
          {"cairn_bytes_written_total", "counter", "Bytes written by ingest commits.",
           st.bytes_written},
          {"cairn_memtable_bytes", "gauge", "RocksDB memtables, every column family.",
           st.resources.memtables},
          {"cairn_block_cache_usage_bytes", "gauge", "RocksDB block cache usage.",
           st.resources.block_cache_usage},
          {"cairn_block_cache_capacity_bytes", "gauge", "RocksDB block cache capacity.",
           st.resources.block_cache_capacity},
          {"cairn_pending_compaction_bytes", "gauge", "RocksDB's estimate of bytes to compact.",
           st.resources.pending_compaction_bytes},
          {"cairn_sst_bytes", "gauge", "Bytes of SST files.", st.resources.sst_bytes},
          {"cairn_wal_bytes", "gauge", "Bytes of WAL files.", st.resources.wal_bytes},
          {"cairn_http_sse_streams", "gauge", "Open HTTP SSE subscriptions.",
           static_cast<uint64_t>(std::max(0, streams_.load()))}}) {
      family(name, type, help);
      absl::StrAppend(&out, name, " ", v, "\n");
    }
    // Histograms: cumulative buckets in seconds, then _sum and _count.
    auto histogram = [&](const char* name, std::string_view labels, const LatencyHistogram& h) {
      uint64_t below = 0;
      const auto& bounds = LatencyHistogram::kBoundsMicros;
      for (size_t i = 0; i < h.counts.size(); ++i) {
        below += h.counts[i];
        absl::StrAppend(&out, name, "_bucket{", AbslView(labels), labels.empty() ? "" : ",",
                        "le=\"", i < bounds.size() ? absl::StrCat(bounds[i] / 1e6) : "+Inf", "\"} ",
                        below, "\n");
      }
      std::string braces = labels.empty() ? "" : absl::StrCat("{", AbslView(labels), "}");
      absl::StrAppend(&out, name, "_sum", braces, " ", h.sum_micros / 1e6, "\n", name, "_count",
                      braces, " ", h.count, "\n");
    };
    family("cairn_ingest_latency_seconds", "histogram",
           "A batch's time from entering the write queue to its commit.");
    histogram("cairn_ingest_latency_seconds", "", st.latency.ingest);
    family("cairn_commit_latency_seconds", "histogram",
           "Each group commit's RocksDB write; sync=\"true\" for those with fsync.");
    histogram("cairn_commit_latency_seconds", "sync=\"false\"", st.latency.commit);
    histogram("cairn_commit_latency_seconds", "sync=\"true\"", st.latency.commit_sync);
    const auto& res = st.resources;
    family("cairn_block_cache_hits_total", "counter", "Block cache lookups that found the block.");
    absl::StrAppend(&out, "cairn_block_cache_hits_total ", res.block_cache_hits, "\n");
    family("cairn_block_cache_misses_total", "counter",
           "Block cache lookups that read the block from disk.");
    absl::StrAppend(&out, "cairn_block_cache_misses_total ", res.block_cache_misses, "\n");
    family("cairn_block_cache_hit_ratio", "gauge",
           "Block cache hits / lookups since cairnd started.");
    uint64_t lookups = res.block_cache_hits + res.block_cache_misses;
    absl::StrAppend(&out, "cairn_block_cache_hit_ratio ",
                    lookups ? static_cast<double>(res.block_cache_hits) / lookups : 0.0, "\n");
    {
      std::map<std::string, std::pair<uint64_t, uint64_t>> by_protocol = {{"grpc", {0, 0}},
                                                                          {"sse", {0, 0}}};
      for (const OpenSubscription& o : OpenSubscriptions()) {
        auto& [count, max_lag] = by_protocol[o.id.substr(0, o.id.find('-'))];
        count++;
        max_lag = std::max(max_lag, st.last_seq > o.delivered ? st.last_seq - o.delivered : 0);
      }
      family("cairn_subscriptions", "gauge", "Open subscriptions, by protocol (grpc, sse).");
      for (const auto& [protocol, v] : by_protocol) {
        absl::StrAppend(&out, "cairn_subscriptions{protocol=\"", protocol, "\"} ", v.first, "\n");
      }
      family("cairn_subscription_max_lag_seqs", "gauge",
             "The largest lag of an open subscription (last seq - its delivered seq).");
      for (const auto& [protocol, v] : by_protocol) {
        absl::StrAppend(&out, "cairn_subscription_max_lag_seqs{protocol=\"", protocol, "\"} ",
                        v.second, "\n");
      }
    }
    family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    long pages = 0, resident = 0;  // NOLINT(runtime/int)
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
      std::fclose(f);
    }
    absl::StrAppend(&out, "process_resident_memory_bytes ",
                    static_cast<uint64_t>(resident) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)),
                    "\n");
    if (deps_->connectors) {
      auto sinks = deps_->connectors->SinkStatusAll();
      family("cairn_sink_lag_seqs", "gauge", "Committed changes a sink has not delivered.");
      for (const auto& k : sinks) {
        absl::StrAppend(&out, "cairn_sink_lag_seqs{sink=\"", label(k.name), "\"} ", k.lag_seqs,
                        "\n");
      }
      family("cairn_sink_lag_seconds", "gauge", "Seconds since a sink was last caught up.");
      for (const auto& k : sinks) {
        absl::StrAppend(&out, "cairn_sink_lag_seconds{sink=\"", label(k.name), "\"} ",
                        k.lag_seconds, "\n");
      }
      family("cairn_sink_dead_letters", "gauge", "Messages a sink's destination refused for good.");
      for (const auto& k : sinks) {
        absl::StrAppend(&out, "cairn_sink_dead_letters{sink=\"", label(k.name), "\"} ",
                        k.dead_letters, "\n");
      }
      auto connectors = deps_->connectors->StatusAll();
      family("cairn_connector_state", "gauge", "1 for a connector's current state.");
      for (const auto& c : connectors) {
        absl::StrAppend(&out, "cairn_connector_state{connector=\"", label(c.name), "\",state=\"",
                        label(c.state), "\"} 1\n");
      }
      family("cairn_connector_events_total", "counter",
             "Events a connector committed since cairnd started.");
      for (const auto& c : connectors) {
        uint64_t events = 0;
        for (const auto& u : c.urls) events += u.events;
        absl::StrAppend(&out, "cairn_connector_events_total{connector=\"", label(c.name), "\"} ",
                        events, "\n");
      }
    }
    return {.content_type = "text/plain; version=0.0.4", .body = std::move(out)};
  }

  Reply Stats(const Caller& caller) {
    if (auto s = deps_->auth->CanAdmin(caller, "http.Stats"); !s.ok()) return Error(s);
    StoreStats st = deps_->store->Stats();
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    w.Key("last_seq");
    w.Uint64(st.last_seq);
    w.Key("oldest_seq");
    w.Uint64(st.oldest_seq);
    w.Key("sources");
    w.StartObject();
    for (const auto& [name, s] : st.sources) {
      w.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
      w.StartObject();
      w.Key("accepted");
      w.Uint64(s.accepted);
      w.Key("duplicates");
      w.Uint64(s.duplicates);
      w.Key("conflicts");
      w.Uint64(s.conflicts);
      w.Key("rejected_batches");
      w.Uint64(s.rejected_batches);
      w.EndObject();
    }
    w.EndObject();
    w.EndObject();
    return {.body = Text(buf)};
  }

  // The body is one payload in the registered source's format (NDJSON for
  // canonical events).
  Reply Ingest(const Caller& caller, const std::string& body, std::string_view query) {
    bool durable = deps_->options->durable;
    std::string source;
    auto params = ParseQuery(query);
    if (!params.ok()) return Error(params.status());
    for (const auto& [name, value, raw] : *params) {
      if (name == "durable" && (value == "true" || value == "1")) {
        durable = true;
      } else if (name == "durable" && (value == "false" || value == "0")) {
      } else if (name == "source") {
        source = value;
      } else {
        return Error(absl::InvalidArgumentError(absl::StrCat(
            "query: unknown parameter \"", Excerpt(raw), "\" (source=NAME, durable=true|false)")));
      }
    }
    absl::StatusOr<std::vector<Event>> events;
    if (source.empty()) {
      // Canonical events, each naming its source, like gRPC's IngestEvents;
      // the token needs a write grant for every source named.
      if (auto s = deps_->auth->Authenticate(caller, "http.Ingest"); !s.ok()) return Error(s);
      events =
          formats::Decode({.name = "", .format = "canonical"}, body, {.source_per_record = true});
      if (!events.ok()) return Error(events.status());
      std::vector<std::string_view> checked;
      for (const Event& e : *events) {
        if (std::find(checked.begin(), checked.end(), e.source) != checked.end()) continue;
        if (auto s = deps_->auth->CanWrite(caller, "http.Ingest", e.source); !s.ok()) {
          return Error(s);
        }
        checked.push_back(e.source);
      }
    } else {
      if (auto s = deps_->auth->CanWrite(caller, "http.Ingest", source); !s.ok()) return Error(s);
      auto def = deps_->store->GetSource(source);
      if (!def.ok()) return Error(def.status());
      if (formats::SessionOnly(def->format)) {
        return Error(absl::FailedPreconditionError(
            absl::StrCat("source ", source, " has format ", def->format,
                         ": its records are posted through contribution sessions")));
      }
      events = formats::Decode(*def, body);
      if (!events.ok()) return Error(events.status());
    }
    if (events->size() > kMaxBatchEvents) {
      return Error(TooLarge(absl::StrCat("request holds ", events->size(), " events; at most ",
                                         kMaxBatchEvents, " per request")));
    }
    auto r = deps_->store->Ingest(*std::move(events), {.durable = durable});
    if (!r.ok()) return Error(r.status());
    return {.body = IngestJson(*r)};
  }

  Reply Console(const std::string& name) {
    for (size_t i = 0; i < kConsoleFileCount; ++i) {
      const ConsoleFile& f = kConsoleFiles[i];
      if (name == f.name) {
        return {.content_type = f.content_type, .body = std::string(f.data, f.size)};
      }
    }
    return Error(absl::NotFoundError(absl::StrCat("no console file ", Excerpt(name))));
  }

  static void SourceJson(Writer& w, const SourceDefinition& d, const SourceStats* st) {
    w.StartObject();
    Str(w, "name", d.name);
    Str(w, "format", d.format);
    Str(w, "default_collection", d.default_collection);
    w.Key("key_fields");
    w.StartObject();
    for (const auto& [collection, fields] : d.key_fields) {
      w.Key(collection.data(), static_cast<rapidjson::SizeType>(collection.size()));
      w.StartArray();
      for (const auto& f : fields) w.String(f.data(), static_cast<rapidjson::SizeType>(f.size()));
      w.EndArray();
    }
    w.EndObject();
    w.Key("collection_map");
    w.StartObject();
    for (const auto& [from, to] : d.collection_map) Str(w, from.c_str(), to);
    w.EndObject();
    w.Key("json_schemas");
    w.StartObject();
    for (const auto& [collection, schema] : d.json_schemas) {
      w.Key(collection.data(), static_cast<rapidjson::SizeType>(collection.size()));
      w.RawValue(schema.data(), schema.size(), rapidjson::kObjectType);
    }
    w.EndObject();
    SourceStats none;
    if (st == nullptr) st = &none;
    w.Key("stats");
    w.StartObject();
    Uints(w, {{"accepted", st->accepted},
              {"duplicates", st->duplicates},
              {"conflicts", st->conflicts},
              {"rejected_batches", st->rejected_batches}});
    PositionJson(w, st->last_position);
    w.EndObject();
    w.EndObject();
  }

  // GET /v1/sources: every registered source with its counters;
  // GET /v1/sources/{name}: one.
  Reply Sources(const Caller& caller, const std::string* name) {
    if (auto s = deps_->auth->CanAdmin(caller, "http.Sources"); !s.ok()) return Error(s);
    StoreStats st = deps_->store->Stats();
    auto stats_of = [&](const std::string& n) -> const SourceStats* {
      auto it = st.sources.find(n);
      return it == st.sources.end() ? nullptr : &it->second;
    };
    rapidjson::StringBuffer buf;
    Writer w(buf);
    if (name != nullptr) {
      auto d = deps_->store->GetSource(*name);
      if (!d.ok()) return Error(d.status());
      SourceJson(w, *d, stats_of(d->name));
      return {.body = Text(buf)};
    }
    auto all = deps_->store->ListSources();
    if (!all.ok()) return Error(all.status());
    return ListReply("sources", *all, [&](Writer& w, const SourceDefinition& d) {
      SourceJson(w, d, stats_of(d.name));
    });
  }

  static void CheckpointJson(Writer& w, const std::string& name, const Store::CheckpointInfo& cp) {
    w.StartObject();
    Str(w, "name", name);
    w.Key("seq");
    w.Uint64(cp.seq);
    w.Key("collections");
    w.StartArray();
    for (const auto& c : cp.collections)
      w.String(c.data(), static_cast<rapidjson::SizeType>(c.size()));
    w.EndArray();
    w.EndObject();
  }

  // GET /v1/checkpoints (admin): every checkpoint.
  // GET /v1/checkpoints/{name}: one, if the token may read its scope.
  // PUT /v1/checkpoints/{name} {"seq": N, "collections": [...]}: create or
  //   move it (the same read-scope rules as Query.CommitCheckpoint).
  // DELETE /v1/checkpoints/{name} (admin).
  Reply Checkpoints(const Caller& caller, http::verb method, const std::string* name,
                    const std::string& body) {
    rapidjson::StringBuffer buf;
    Writer w(buf);
    if (name == nullptr) {
      if (method != http::verb::get) return MethodNotAllowed("GET");
      if (auto s = deps_->auth->CanAdmin(caller, "http.Checkpoints"); !s.ok()) return Error(s);
      auto all = deps_->store->ListCheckpointInfos();
      if (!all.ok()) return Error(all.status());
      return ListReply("checkpoints", *all, [](Writer& w, const auto& entry) {
        CheckpointJson(w, entry.first, entry.second);
      });
    }
    if (method == http::verb::get) {
      auto cp = ReadableCheckpoint(deps_, caller, "http.GetCheckpoint", *name);
      if (!cp.ok()) return Error(cp.status());
      CheckpointJson(w, *name, *cp);
      return {.body = Text(buf)};
    }
    if (method == http::verb::put) {
      rapidjson::Document doc;
      doc.Parse(body.data(), body.size());
      if (doc.HasParseError() || !doc.IsObject()) {
        return Error(absl::InvalidArgumentError(
            "body: must be a JSON object {\"seq\": N, \"collections\": [...]}"));
      }
      if (!doc.HasMember("seq") || !doc["seq"].IsUint64()) {
        return Error(absl::InvalidArgumentError("seq: must be a whole number"));
      }
      std::vector<std::string> collections;
      if (doc.HasMember("collections")) {
        const auto& c = doc["collections"];
        if (!c.IsArray()) return Error(absl::InvalidArgumentError("collections: must be an array"));
        for (rapidjson::SizeType i = 0; i < c.Size(); ++i) {
          if (!c[i].IsString()) {
            return Error(
                absl::InvalidArgumentError(absl::StrCat("collections[", i, "]: must be a string")));
          }
          collections.emplace_back(c[i].GetString(), c[i].GetStringLength());
        }
      }
      Store::CheckpointInfo cp{.seq = doc["seq"].GetUint64(), .collections = collections};
      if (auto s =
              CommitCheckpoint(deps_, caller, "http.PutCheckpoint", *name, cp.seq, collections);
          !s.ok()) {
        return Error(s);
      }
      CheckpointJson(w, *name, cp);
      return {.body = Text(buf)};
    }
    if (method == http::verb::delete_) {
      if (auto s = deps_->auth->CanAdmin(caller, "http.DeleteCheckpoint"); !s.ok()) return Error(s);
      if (auto s = deps_->store->DeleteCheckpoint(*name); !s.ok()) return Error(s);
      return {.body = "{}"};
    }
    return MethodNotAllowed("GET, PUT or DELETE");
  }

  // GET /v1/connectors: each connector's state and, per URL (or stream),
  // its resume point and counters.
  Reply Connectors(const Caller& caller) {
    if (auto s = deps_->auth->CanAdmin(caller, "http.Connectors"); !s.ok()) return Error(s);
    return ListReply("connectors", deps_->connectors->StatusAll(),
                     [](Writer& w, const connectors::ConnectorStatus& c) {
                       w.StartObject();
                       Str(w, "name", c.name);
                       Str(w, "state", c.state);
                       w.Key("urls");
                       w.StartArray();
                       for (const connectors::UrlStatus& u : c.urls) {
                         w.StartObject();
                         Str(w, "url", u.url);
                         Str(w, "state", u.state);
                         Str(w, "last_event_id", u.last_event_id);
                         PositionJson(w, u.last_position);
                         Uints(w, {{"events", u.events},
                                   {"applied", u.applied},
                                   {"duplicates", u.duplicates},
                                   {"skipped", u.skipped},
                                   {"reconnects", u.reconnects},
                                   {"gaps", u.gaps}});
                         w.Key("last_commit_unix_micros");
                         w.Int64(u.last_commit_unix_micros);
                         Str(w, "last_error", u.last_error);
                         w.EndObject();
                       }
                       w.EndArray();
                       w.EndObject();
                     });
  }

  // GET /v1/sinks: each sink's state, checkpoint and lag.
  Reply Sinks(const Caller& caller) {
    if (auto s = deps_->auth->CanAdmin(caller, "http.Sinks"); !s.ok()) return Error(s);
    return ListReply("sinks", deps_->connectors->SinkStatusAll(),
                     [](Writer& w, const connectors::SinkStatus& k) {
                       w.StartObject();
                       Str(w, "name", k.name);
                       Str(w, "state", k.state);
                       Uints(w, {{"checkpoint_seq", k.checkpoint_seq},
                                 {"lag_seqs", k.lag_seqs},
                                 {"delivered", k.delivered},
                                 {"retries", k.retries},
                                 {"dead_letters", k.dead_letters}});
                       w.Key("lag_seconds");
                       w.Double(k.lag_seconds);
                       Str(w, "last_error", k.last_error);
                       w.EndObject();
                     });
  }

  // Open subscriptions, gRPC and SSE: what each has delivered and its lag.
  struct OpenSubscription {
    std::string id;  // grpc-N or sse-N
    uint64_t delivered = 0;
  };
  std::vector<OpenSubscription> OpenSubscriptions() {
    std::vector<OpenSubscription> out;
    if (dispatcher_) {
      for (auto [id, seq] : dispatcher_->Delivered())
        out.push_back({absl::StrCat("grpc-", id), seq});
    }
    for (auto [id, seq] : registry_->Delivered()) out.push_back({absl::StrCat("sse-", id), seq});
    return out;
  }

  // GET /v1/subscriptions
  Reply Subscriptions(const Caller& caller) {
    if (auto s = deps_->auth->CanAdmin(caller, "http.Subscriptions"); !s.ok()) return Error(s);
    uint64_t last = deps_->store->LastSeq();
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    w.Key("last_seq");
    w.Uint64(last);
    w.Key("subscriptions");
    w.StartArray();
    for (const OpenSubscription& o : OpenSubscriptions()) {
      w.StartObject();
      Str(w, "id", o.id);
      w.Key("delivered_seq");
      w.Uint64(o.delivered);
      w.Key("lag_seqs");
      w.Uint64(last > o.delivered ? last - o.delivered : 0);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return {.body = Text(buf)};
  }

  Deps* const deps_;
  bool loopback_ = false;
  Dispatcher* const dispatcher_;  // gRPC subscriptions; null in tests without gRPC
  SseRegistry* const registry_;
  std::atomic<int> streams_{0};
};

// One connection: requests in turn (keep-alive), or one SSE or snapshot
// stream. `Stream` is beast::tcp_stream, or beast::ssl_stream over one
// (--tls-cert): the TLS handshake comes first.
template <class Stream>
class Session : public SseStream, public std::enable_shared_from_this<Session<Stream>> {
 public:
  template <class... TlsContext>
  Session(tcp::socket socket, Router* router, SseRegistry* registry, Deps* deps,
          net::thread_pool* handlers, TlsContext&... tls)
      : stream_(std::move(socket), tls...),
        handlers_(handlers),
        router_(router),
        registry_(registry),
        deps_(deps),
        body_limit_(static_cast<uint64_t>(deps->options->max_message_bytes)) {}
  ~Session() {
    if (sub_) router_->ReleaseStream();
  }

  // SSE: sends what the subscription has ready (one chunk in flight at a
  // time, at most kSseChunk bytes: a slow client holds one chunk and later
  // reads on from the store), or a heartbeat comment when one is due. Runs
  // on the connection's strand: the pump thread posts it after each commit.
  void Pump() override {
    if (!sub_ || writing_ || done_) return;
    std::string out;
    bool end = false;
    for (int n = 0; n < 1024 && out.size() < kSseChunk; ++n) {
      SubscriptionItem item;
      auto got = sub_->Next(absl::ZeroDuration(), &item);
      if (!got.ok()) {  // OUT_OF_RANGE (retention passed it), or cancelled
        absl::StrAppend(&out, "event: error\ndata: ", ErrorJson(got.status()), "\n\n");
        end = true;
        break;
      }
      if (!*got) break;
      out += SseEvent(item);
    }
    absl::Time now = absl::Now();
    if (out.empty() && now < next_heartbeat_) return;
    if (out.empty()) out = ": heartbeat\n\n";
    next_heartbeat_ = now + heartbeat_;
    writing_ = true;
    auto buf = std::make_shared<std::string>(std::move(out));
    // A client that takes nothing for this long is cut off; it resumes with
    // Last-Event-ID.
    beast::get_lowest_layer(stream_).expires_after(
        std::chrono::seconds(absl::ToInt64Seconds(deps_->options->subscriber_stall_timeout)));
    net::async_write(stream_, http::make_chunk(net::buffer(*buf)),
                     [self = this->shared_from_this(), buf, end](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       if (ec || end) {
                         self->done_ = true;
                         beast::error_code ignored;
                         beast::get_lowest_layer(self->stream_)
                             .socket()
                             .shutdown(tcp::socket::shutdown_both, ignored);
                         return;
                       }
                       self->Pump();
                     });
  }
  bool done() const override { return done_; }
  uint64_t id() const override { return id_; }
  // What the stream has taken from its subscription (the pump thread reads
  // it; sub_ is set before the session is registered and kept till its end).
  uint64_t delivered() const override { return sub_->position(); }
  net::any_io_executor executor() override { return stream_.get_executor(); }

  // The connection's first step: the TLS handshake when there is TLS.
  void Start() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      Read();
    } else {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(30));
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (!ec) self->Read();  // else: not TLS, or refused: closed
                              });
    }
  }

  void Read() {
    parser_.emplace();
    parser_->body_limit(body_limit_);
    beast::get_lowest_layer(stream_).expires_after(
        std::chrono::seconds(120));  // an idle keep-alive connection
    http::async_read(stream_, buf_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       if (ec == http::error::body_limit) {
                         self->Answer(Error(TooLarge(absl::StrCat("request body larger than ",
                                                                  self->body_limit_, " bytes"))),
                                      false);
                         return;
                       }
                       if (ec) return;  // closed, timed out or not HTTP
                       self->Handle();
                     });
  }

 private:
  void Handle() {
    const auto& req = parser_->get();
    Caller caller;
    if (auto it = req.find(http::field::authorization); it != req.end()) {
      caller.authorization = std::string(it->value());
    } else if (auto bbk = req.find("x-bbk-auth-token"); bbk != req.end()) {
      caller.authorization = "Bearer " + std::string(bbk->value());  // BitBroker's header
    }
    beast::error_code ec;
    auto peer = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) caller.peer = absl::StrCat("ipv4:", peer.address().to_string(), ":", peer.port());
    auto target = Router::ParseTarget(req);
    if (!target.ok()) return Respond(Error(target.status()));
    if (deps_->shutting_down.load() || !router_->MayWaitForDisk(*target)) {
      return Respond(router_->Handle(req, *target, caller));  // shutting down: 503 at once
    }
    // A call that waits for an fsync runs on the handler pool, so that it
    // holds a pool thread, not one of the two io threads every other
    // connection and SSE stream needs. Nothing touches the connection
    // meanwhile (no read is pending). The rest run here: the hop to the pool
    // and back costs a one-event request a third of its rate on 2 cores.
    net::post(*handlers_, [self = this->shared_from_this(), target = *std::move(target),
                           caller = std::move(caller)] {
      auto reply =
          std::make_shared<Reply>(self->router_->Handle(self->parser_->get(), target, caller));
      net::post(self->stream_.get_executor(), [self, reply] { self->Respond(std::move(*reply)); });
    });
  }

  void Respond(Reply reply) {
    bool keep_alive = parser_->get().keep_alive();
    if (reply.subscription) return StartSse(std::move(reply));
    if (reply.cursor) return StartCursor(std::move(reply), keep_alive);
    Answer(std::move(reply), keep_alive);
  }

  void StartSse(Reply reply) {
    sub_ = std::move(reply.subscription);
    static std::atomic<uint64_t> next_id{1};
    id_ = next_id.fetch_add(1);
    heartbeat_ = reply.heartbeat;
    next_heartbeat_ = absl::Now() + heartbeat_;
    auto res = std::make_shared<http::response<http::empty_body>>(http::status::ok, 11);
    res->set(http::field::server, "cairnd");
    res->set(http::field::content_type, "text/event-stream");
    res->set(http::field::cache_control, "no-cache");
    res->chunked(true);
    auto sr = std::make_shared<http::response_serializer<http::empty_body>>(*res);
    writing_ = true;
    beast::get_lowest_layer(stream_).expires_never();
    http::async_write_header(
        stream_, *sr, [self = this->shared_from_this(), res, sr](beast::error_code ec, size_t) {
          self->writing_ = false;
          if (ec) {
            self->done_ = true;
            return;
          }
          self->registry_->Add(self);
          self->WatchClose();
          self->Pump();
        });
  }

  // NDJSON from a snapshot cursor, one entity per line, in chunks of at
  // most kSseChunk: memory is one chunk whatever the snapshot's size. The
  // consistent seq is the X-Cairn-Snapshot-Seq header. An error after the
  // header (the status is sent) is a last line {"error": {...}}.
  void StartCursor(Reply reply, bool keep_alive) {
    cursor_ = std::move(reply.cursor);
    auto res = std::make_shared<http::response<http::empty_body>>(http::status::ok, 11);
    res->set(http::field::server, "cairnd");
    res->set(http::field::content_type, reply.content_type);
    res->set("X-Cairn-Snapshot-Seq", std::to_string(cursor_->seq()));
    res->keep_alive(keep_alive);
    res->chunked(true);
    auto sr = std::make_shared<http::response_serializer<http::empty_body>>(*res);
    http::async_write_header(
        stream_, *sr,
        [self = this->shared_from_this(), res, sr, keep_alive](beast::error_code ec, size_t) {
          if (ec) return;
          self->StreamCursor(keep_alive);
        });
  }

  void StreamCursor(bool keep_alive) {
    std::string out;
    bool end = false;
    while (out.size() < kSseChunk) {
      auto more = cursor_->Next();
      if (!more.ok()) {
        absl::StrAppend(&out, "{\"error\":", ErrorJson(more.status()), "}\n");
        end = true;
        keep_alive = false;
        break;
      }
      if (!*more) {
        end = true;
        break;
      }
      absl::StrAppend(&out, EntityJson(cursor_->entity()), "\n");
    }
    auto chunk = std::make_shared<std::string>(std::move(out));
    auto done = [self = this->shared_from_this(), chunk, end, keep_alive](beast::error_code ec,
                                                                          size_t) {
      if (ec) return;
      if (!end) return self->StreamCursor(keep_alive);
      self->cursor_.reset();
      if (keep_alive) {
        self->Read();
      } else {
        beast::error_code ignored;
        beast::get_lowest_layer(self->stream_)
            .socket()
            .shutdown(tcp::socket::shutdown_send, ignored);
      }
    };
    beast::get_lowest_layer(stream_).expires_after(
        std::chrono::seconds(absl::ToInt64Seconds(deps_->options->subscriber_stall_timeout)));
    if (end) {
      // The last lines and the chunked body's end in one write.
      auto last = std::make_shared<http::chunk_last<>>();
      if (!chunk->empty()) {
        net::async_write(
            stream_, http::make_chunk(net::buffer(*chunk)),
            [self = this->shared_from_this(), chunk, last, done](beast::error_code ec, size_t n) {
              if (ec) return done(ec, n);
              net::async_write(self->stream_, *last,
                               [last, done](beast::error_code ec, size_t n) { done(ec, n); });
            });
      } else {
        net::async_write(stream_, *last,
                         [last, done](beast::error_code ec, size_t n) { done(ec, n); });
      }
      return;
    }
    net::async_write(stream_, http::make_chunk(net::buffer(*chunk)), done);
  }

  // A client that closes its end (or resets it) ends the stream at once,
  // not at the next write. Reads the raw socket: the stream's write timeout
  // does not apply.
  void WatchClose() {
    beast::get_lowest_layer(stream_).socket().async_read_some(
        net::buffer(scratch_), [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (!ec) return self->WatchClose();  // a client sends nothing more; ignored
          self->done_ = true;
          beast::error_code ignored;
          beast::get_lowest_layer(self->stream_).socket().close(ignored);
        });
  }

  void Answer(Reply reply, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.status), 11);
    res->set(http::field::server, "cairnd");
    res->set(http::field::content_type, reply.content_type);
    if (!reply.location.empty()) res->set(http::field::location, reply.location);
    res->keep_alive(keep_alive);
    res->body() = std::move(reply.body);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(
        std::chrono::seconds(absl::ToInt64Seconds(deps_->options->subscriber_stall_timeout)));
    http::async_write(
        stream_, *res,
        [self = this->shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
          if (ec || !keep_alive) {
            beast::error_code ignored;
            beast::get_lowest_layer(self->stream_)
                .socket()
                .shutdown(tcp::socket::shutdown_send, ignored);
            return;
          }
          self->Read();
        });
  }

  static constexpr size_t kSseChunk = 256 << 10;

  Stream stream_;
  net::thread_pool* const handlers_;
  Router* const router_;
  SseRegistry* const registry_;
  Deps* const deps_;
  const uint64_t body_limit_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<SnapshotCursor> cursor_;
  // SSE (on the strand).
  std::unique_ptr<Subscription> sub_;
  uint64_t id_ = 0;
  absl::Duration heartbeat_;
  absl::Time next_heartbeat_;
  bool writing_ = false;
  std::atomic<bool> done_{false};  // read by the pump thread
  char scratch_[64];
};

class HttpServerImpl : public HttpServer, public SseRegistry {
 public:
  // Durable engine calls at once: enough for group commit to gather
  // durable ingests into one fsync.
  static constexpr int kHandlerThreads = 8;

  HttpServerImpl(Deps* deps, Dispatcher* dispatcher)
      : router_(deps, dispatcher, this), deps_(deps) {}
  ~HttpServerImpl() override { Shutdown(); }

  void Add(std::shared_ptr<SseStream> s) override {
    absl::MutexLock l(&sse_mu_);
    sse_.push_back(std::move(s));
  }

  std::vector<std::pair<uint64_t, uint64_t>> Delivered() override {
    absl::MutexLock l(&sse_mu_);
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (const auto& s : sse_) {
      if (!s->done()) out.emplace_back(s->id(), s->delivered());
    }
    return out;
  }

  // TLS with the gRPC listener's certificate flags (--tls-cert, --tls-key,
  // --tls-client-ca for mutual TLS); TLS 1.2 and later.
  absl::Status LoadTls(const ServerOptions& o) {
    if (o.tls_cert_file.empty()) return absl::OkStatus();
    tls_ = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
    tls_->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                      net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                      net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use);
    beast::error_code ec;
    auto failed = [&](const char* flag, const std::string& file) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", file, ": ", ec.message(), " (the HTTP listener's TLS)"));
    };
    if (tls_->use_certificate_chain_file(o.tls_cert_file, ec); ec) {
      return failed("--tls-cert", o.tls_cert_file);
    }
    if (tls_->use_private_key_file(o.tls_key_file, net::ssl::context::pem, ec); ec) {
      return failed("--tls-key", o.tls_key_file);
    }
    if (!o.tls_client_ca_file.empty()) {
      if (tls_->load_verify_file(o.tls_client_ca_file, ec); ec) {
        return failed("--tls-client-ca", o.tls_client_ca_file);
      }
      tls_->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
    }
    return absl::OkStatus();
  }

  absl::Status Listen(const std::string& listen) {
    CAIRN_RETURN_IF_ERROR(LoadTls(*deps_->options));
    size_t colon = listen.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
        port < 0 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("--http-listen ", listen, ": expected host:port"));
    }
    std::string host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    beast::error_code ec;
    auto address = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("--http-listen ", listen, ": not an IP address: ", ec.message()));
    }
    tcp::endpoint ep(address, static_cast<unsigned short>(port));
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      return absl::UnavailableError(absl::StrCat("--http-listen ", listen, ": ", ec.message()));
    port_ = acceptor_.local_endpoint().port();
    router_.set_loopback(address.is_loopback());
    Accept();
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
    pump_ = std::thread([this] { PumpLoop(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

  void Shutdown() override {
    if (stopped_.exchange(true)) return;
    if (pump_.joinable()) pump_.join();
    net::post(acceptor_.get_executor(), [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
    });
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    handlers_.join();  // the engine calls in flight finish; their answers are dropped
    {
      absl::MutexLock l(&sse_mu_);
      sse_.clear();
    }
    // What is ready runs once; the connections still open (idle keep-alive,
    // SSE, with their subscriptions) go when ioc_ is destroyed: the owner
    // destroys this server right after Shutdown, before the store.
    ioc_.restart();
    ioc_.poll();
  }

 private:
  // Wakes every SSE stream after each commit (and at least every 100 ms,
  // for heartbeats); streams whose connection ended leave the list.
  void PumpLoop() {
    uint64_t seen = deps_->store->LastSeq();
    while (!stopped_.load()) {
      deps_->store->AwaitCommit(seen, absl::Milliseconds(100));
      seen = deps_->store->LastSeq();
      absl::MutexLock l(&sse_mu_);
      std::vector<std::shared_ptr<SseStream>> live;
      for (auto& s : sse_) {
        if (s->done()) continue;
        net::post(s->executor(), [s] { s->Pump(); });
        live.push_back(std::move(s));
      }
      sse_.swap(live);
    }
  }

  void Accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      if (ec == net::error::operation_aborted || stopped_.load() || !acceptor_.is_open()) return;
      if (ec) {
        // Out of file descriptors, say: try again in a while, not at once.
        auto timer = std::make_shared<net::steady_timer>(acceptor_.get_executor(),
                                                         std::chrono::milliseconds(100));
        timer->async_wait([this, timer](beast::error_code) { Accept(); });
        return;
      }
      {
        // Small writes (an SSE event, a short answer) go out at once, not
        // after the client's delayed ACK (Nagle).
        beast::error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        if (tls_) {
          std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
              std::move(s), &router_, this, deps_, &handlers_, *tls_)
              ->Start();
        } else {
          std::make_shared<Session<beast::tcp_stream>>(std::move(s), &router_, this, deps_,
                                                       &handlers_)
              ->Start();
        }
      }
      Accept();
    });
  }

  // Declared before ioc_: a connection destroyed with it still counts out
  // of the router.
  Router router_;
  Deps* const deps_;
  std::unique_ptr<net::ssl::context> tls_;  // with --tls-cert
  net::io_context ioc_{2};
  // On a strand: the accept handler and Shutdown's close never overlap.
  tcp::acceptor acceptor_{net::make_strand(ioc_)};
  // Where handlers that may wait for an fsync call the engine
  // (Session::Handle). Declared after ioc_: destroyed first, so a task it
  // never ran drops its connection while the io_context still exists.
  net::thread_pool handlers_{kHandlerThreads};
  int port_ = 0;
  std::vector<std::thread> threads_;
  std::thread pump_;
  std::atomic<bool> stopped_{false};
  absl::Mutex sse_mu_;
  std::vector<std::shared_ptr<SseStream>> sse_ ABSL_GUARDED_BY(sse_mu_);
};

}  // namespace

absl::Status TooLarge(std::string_view message) {
  absl::Status s = absl::ResourceExhaustedError(AbslView(message));
  s.SetPayload(AbslView(kTooLargePayload), absl::Cord("request past a size bound"));
  return s;
}

int HttpStatusOf(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kOutOfRange:
      return 410;
    case absl::StatusCode::kResourceExhausted:
      return s.GetPayload(AbslView(kTooLargePayload)).has_value() ? 413 : 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& s) {
  v1::IngestAck ack;
  wire::FailAck(s, &ack);
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  Str(w, "code", absl::StatusCodeToString(s.code()));
  Str(w, "message", StdView(s.message()));
  w.Key("errors");
  w.StartArray();
  for (const auto& e : ack.errors()) {
    w.StartObject();
    w.Key("index");
    w.Uint64(e.index());
    Str(w, "field", e.field());
    Str(w, "reason", e.reason());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return Text(buf);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen, Deps* deps,
                                                              Dispatcher* dispatcher) {
  auto server = std::make_unique<HttpServerImpl>(deps, dispatcher);
  CAIRN_RETURN_IF_ERROR(server->Listen(listen));
  return server;
}

}  // namespace cairn::server
