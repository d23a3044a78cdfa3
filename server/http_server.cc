// cairnd's HTTP listener (http_server.h).
//
// Threads: one io_context run by two threads; a connection is a Session
// reading requests in turn (keep-alive). Handlers run on the io threads and
// call the engine directly: a durable ingest holds its thread for the fsync.
//
// Routes (README "HTTP API"):
//   GET  /healthz, /readyz
//   GET  /v1/entities/{collection}/{key}           the entity
//   GET  /v1/entities/{collection}/{key}/history   its versions
//   GET  /v1/stats
//   POST /v1/ingest?source=NAME[&durable=true]     a payload in the registered
//                                                  source's format
// {key} is the key's JSON text, percent-encoded (106, %22GB%22); a key that
// is not JSON is taken as a string (GB).
#include "http_server.h"

#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cairn/formats.h"
#include "cairn/status.h"
#include "convert.h"
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
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

Reply Error(const absl::Status& s) { return {.status = HttpStatusOf(s), .body = ErrorJson(s)}; }

void Str(Writer& w, const char* k, std::string_view v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

void Raw(Writer& w, const char* k, std::string_view json) {
  w.Key(k);
  if (json.empty()) {
    w.Null();
  } else {
    w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  }
}

void PositionJson(Writer& w, const Position& p) {
  w.Key("position");
  w.StartObject();
  w.Key("timestamp");
  w.Uint64(p.timestamp);
  w.Key("tick");
  w.Uint64(p.tick);
  w.EndObject();
}

std::string Done(rapidjson::StringBuffer& buf) {
  return std::string(buf.GetString(), buf.GetSize());
}

// %XX decoding of one path segment or query value; nullopt when malformed.
std::optional<std::string> PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
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
  return Done(buf);
}

class Router {
 public:
  explicit Router(Deps* deps) : deps_(deps) {}

  Reply Handle(const http::request<http::string_body>& req, const Caller& caller) {
    std::string_view target(req.target().data(), req.target().size());
    std::string_view path = target.substr(0, target.find('?'));
    std::string_view query =
        path.size() < target.size() ? target.substr(path.size() + 1) : std::string_view();
    std::vector<std::string> seg;
    for (absl::string_view s : absl::StrSplit(AbslView(path), '/', absl::SkipEmpty())) {
      auto d = PercentDecode(StdView(s));
      if (!d) return Error(absl::InvalidArgumentError("path: malformed percent-encoding"));
      seg.push_back(*std::move(d));
    }
    bool get = req.method() == http::verb::get;
    bool post = req.method() == http::verb::post;
    if (deps_->shutting_down.load())
      return Error(absl::UnavailableError("cairnd is shutting down"));
    if (seg.size() == 1 && seg[0] == "healthz" && get) {
      return {.content_type = "text/plain", .body = "ok\n"};
    }
    if (seg.size() == 1 && seg[0] == "readyz" && get) {
      return {.content_type = "text/plain", .body = "ready\n"};
    }
    if (seg.size() >= 2 && seg[0] == "v1") {
      if (seg[1] == "entities" && (seg.size() == 4 || (seg.size() == 5 && seg[4] == "history"))) {
        if (!get) return MethodNotAllowed("GET");
        return seg.size() == 4 ? GetEntity(caller, seg[2], seg[3])
                               : History(caller, seg[2], seg[3]);
      }
      if (seg[1] == "stats" && seg.size() == 2) {
        if (!get) return MethodNotAllowed("GET");
        return Stats(caller);
      }
      if (seg[1] == "ingest" && seg.size() == 2) {
        if (!post) return MethodNotAllowed("POST");
        return Ingest(caller, req.body(), query);
      }
    }
    return Error(absl::NotFoundError(absl::StrCat("no such endpoint: ", AbslView(path))));
  }

 private:
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
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    Str(w, "collection", e->collection);
    Raw(w, "key", e->key);
    Raw(w, "document", e->document);
    w.Key("complete");
    w.Bool(e->complete);
    PositionJson(w, e->position);
    Str(w, "source", e->source);
    w.Key("seq");
    w.Uint64(e->seq);
    w.EndObject();
    return {.body = Done(buf)};
  }

  Reply History(const Caller& caller, const std::string& collection, const std::string& key) {
    if (auto s = deps_->auth->CanRead(caller, "http.History", {collection}); !s.ok()) {
      return Error(s);
    }
    auto h = deps_->store->History(collection, KeyOf(key), {});
    if (!h.ok()) return Error(h.status());
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    Str(w, "collection", collection);
    Raw(w, "key", KeyOf(key));
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
      Raw(w, "before", v.before);
      Raw(w, "after", v.after);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    return {.body = Done(buf)};
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
    return {.body = Done(buf)};
  }

  // The body is one payload in the registered source's format (NDJSON for
  // canonical events).
  Reply Ingest(const Caller& caller, const std::string& body, std::string_view query) {
    bool durable = deps_->options->durable;
    std::string source;
    for (absl::string_view kv : absl::StrSplit(AbslView(query), '&', absl::SkipEmpty())) {
      if (kv == "durable=true" || kv == "durable=1") {
        durable = true;
      } else if (kv == "durable=false" || kv == "durable=0") {
      } else if (absl::StartsWith(kv, "source=")) {
        auto d = PercentDecode(StdView(kv.substr(7)));
        if (!d) return Error(absl::InvalidArgumentError("query: malformed percent-encoding"));
        source = *std::move(d);
      } else {
        return Error(absl::InvalidArgumentError(
            absl::StrCat("query: unknown parameter \"", Excerpt(StdView(kv)),
                         "\" (source=NAME, durable=true|false)")));
      }
    }
    if (source.empty()) {
      return Error(absl::InvalidArgumentError("query: source is required (?source=NAME)"));
    }
    if (auto s = deps_->auth->CanWrite(caller, "http.Ingest", source); !s.ok()) return Error(s);
    auto def = deps_->store->GetSource(source);
    if (!def.ok()) return Error(def.status());
    if (formats::SessionOnly(def->format)) {
      return Error(absl::FailedPreconditionError(
          absl::StrCat("source ", source, " has format ", def->format,
                       ": its records are posted through contribution sessions")));
    }
    auto events = formats::Decode(*def, body);
    if (!events.ok()) return Error(events.status());
    if (events->size() > kMaxBatchEvents) {
      return Error(absl::ResourceExhaustedError(absl::StrCat(
          "request holds ", events->size(), " events; at most ", kMaxBatchEvents, " per request")));
    }
    auto r = deps_->store->Ingest(*std::move(events), {.durable = durable});
    if (!r.ok()) return Error(r.status());
    rapidjson::StringBuffer buf;
    Writer w(buf);
    w.StartObject();
    for (auto [k, v] : {std::pair<const char*, uint64_t>{"first_seq", r->first_seq},
                        {"last_seq", r->last_seq},
                        {"applied", r->applied},
                        {"duplicates", r->duplicates},
                        {"conflicts", r->conflicts}}) {
      w.Key(k);
      w.Uint64(v);
    }
    w.EndObject();
    return {.body = Done(buf)};
  }

  Deps* const deps_;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Router* router, uint64_t body_limit)
      : stream_(std::move(socket)), router_(router), body_limit_(body_limit) {}

  void Read() {
    parser_.emplace();
    parser_->body_limit(body_limit_);
    stream_.expires_after(std::chrono::seconds(120));  // an idle keep-alive connection
    http::async_read(
        stream_, buf_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
          if (ec == http::error::body_limit) {
            self->Answer(Error(absl::ResourceExhaustedError(absl::StrCat(
                             "request body larger than ", self->body_limit_, " bytes"))),
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
    }
    beast::error_code ec;
    auto peer = stream_.socket().remote_endpoint(ec);
    if (!ec) caller.peer = absl::StrCat("ipv4:", peer.address().to_string(), ":", peer.port());
    Answer(router_->Handle(req, caller), req.keep_alive());
  }

  void Answer(Reply reply, bool keep_alive) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(reply.status), 11);
    res->set(http::field::server, "cairnd");
    res->set(http::field::content_type, reply.content_type);
    res->keep_alive(keep_alive);
    res->body() = std::move(reply.body);
    res->prepare_payload();
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
                        if (ec || !keep_alive) {
                          beast::error_code ignored;
                          self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                          return;
                        }
                        self->Read();
                      });
  }

  beast::tcp_stream stream_;
  Router* const router_;
  const uint64_t body_limit_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
};

class HttpServerImpl : public HttpServer {
 public:
  explicit HttpServerImpl(Deps* deps) : router_(deps), deps_(deps) {}
  ~HttpServerImpl() override { Shutdown(); }

  absl::Status Listen(const std::string& listen) {
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
    Accept();
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

  void Shutdown() override {
    if (stopped_.exchange(true)) return;
    net::post(ioc_, [this] {
      beast::error_code ignored;
      acceptor_.close(ignored);
    });
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  void Accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) {
        std::make_shared<Session>(std::move(s), &router_,
                                  static_cast<uint64_t>(deps_->options->max_message_bytes))
            ->Read();
      }
      Accept();
    });
  }

  net::io_context ioc_{2};
  tcp::acceptor acceptor_{ioc_};
  Router router_;
  Deps* const deps_;
  int port_ = 0;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopped_{false};
};

}  // namespace

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
    case absl::StatusCode::kResourceExhausted: {
      std::string_view m(s.message().data(), s.message().size());
      return m.find("larger than") != m.npos || m.find("at most") != m.npos ? 413 : 429;
    }
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
  return Done(buf);
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen,
                                                              Deps* deps) {
  auto server = std::make_unique<HttpServerImpl>(deps);
  CAIRN_RETURN_IF_ERROR(server->Listen(listen));
  return server;
}

}  // namespace cairn::server
