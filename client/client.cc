#include "cairn/client.h"

#include <grpcpp/grpcpp.h>

#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cairn/status.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "convert.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cairn::client {
namespace {
// Marks the statuses of an ingest stream that ended (StreamEnded).
constexpr char kStreamEndedPayload[] = "type.cairn.dev/ingest-stream-ended";
}  // namespace

bool StreamEnded(const absl::Status& s) {
  return !s.ok() && s.GetPayload(kStreamEndedPayload).has_value();
}

namespace {

using wire::FromGrpc;
using wire::FromProto;
using wire::ToProto;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The ack of a failed batch as a status plus its record errors.
absl::StatusOr<IngestResult> FromAck(const v1::IngestAck& ack, std::vector<RecordError>* errors) {
  if (ack.code() == 0) return FromProto(ack);
  if (errors) {
    for (const auto& e : ack.errors()) errors->push_back({e.index(), e.field(), e.reason()});
  }
  return wire::AckStatus(ack);
}

class ClientImpl;

// One thread may Send while another Receives. gRPC allows one write-side
// operation (Write, WritesDone) and one read-side operation (Read, Finish) at
// a time, so whichever side first sees the stream end calls Finish -- unless
// the other side is inside a Read, which will end too and call it -- and
// the other side waits for its status.
class IngestStreamImpl : public IngestStream {
 public:
  IngestStreamImpl(std::unique_ptr<grpc::ClientContext> ctx, v1::Ingest::Stub* stub, bool payloads)
      : ctx_(std::move(ctx)), payloads_(payloads) {
    if (payloads_) {
      raw_ = stub->IngestPayloads(ctx_.get());
    } else {
      events_ = stub->IngestEvents(ctx_.get());
    }
  }

  absl::Status Send(std::vector<Event> events, bool durable) override {
    if (payloads_) return absl::FailedPreconditionError("this stream takes payloads");
    v1::IngestRequest req;
    req.set_batch_id(++next_batch_);
    req.set_durable(durable);
    req.set_coalesce_acks(true);
    for (const Event& e : events) ToProto(e, req.add_events());
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    return Write([&] { return events_->Write(req); });
  }

  absl::Status SendPayload(std::string_view source, std::string payload, bool durable) override {
    if (!payloads_) return absl::FailedPreconditionError("this stream takes events");
    v1::IngestRawRequest req;
    req.set_batch_id(++next_batch_);
    req.set_source(std::string(source));
    req.set_payload(std::move(payload));
    req.set_durable(durable);
    req.set_coalesce_acks(true);
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    return Write([&] { return raw_->Write(req); });
  }

  absl::StatusOr<IngestResult> Receive(std::vector<RecordError>* errors) override {
    if (coalesced_.empty()) {
      {
        absl::MutexLock l(&mu_);
        if (finishing_) return EndedLocked();
        reading_ = true;
      }
      v1::IngestAck ack;
      bool ok = payloads_ ? raw_->Read(&ack) : events_->Read(&ack);
      {
        absl::MutexLock l(&mu_);
        reading_ = false;
        if (!ok && finishing_) return EndedLocked();
        if (!ok) finishing_ = true;
      }
      if (!ok) return Ended(FinishStream());
      // The server may answer several batches in one message (we ask it to
      // with coalesce_acks): hand them out one per call, in order.
      for (v1::IngestAck& more : *ack.mutable_coalesced()) coalesced_.push_back(std::move(more));
      ack.clear_coalesced();
      coalesced_.push_front(std::move(ack));
    }
    v1::IngestAck ack = std::move(coalesced_.front());
    coalesced_.pop_front();
    return FromAck(ack, errors);
  }

  absl::Status Close() override {
    {
      absl::MutexLock l(&mu_);
      if (finishing_) {
        mu_.Await(absl::Condition(&finished_));
        return final_;
      }
      finishing_ = true;
    }
    if (payloads_) {
      raw_->WritesDone();
    } else {
      events_->WritesDone();
    }
    return FinishStream();
  }

  ~IngestStreamImpl() override {
    bool open;
    {
      absl::MutexLock l(&mu_);
      open = !finishing_;
    }
    if (open) {
      ctx_->TryCancel();
      Close().IgnoreError();
    }
  }

 private:
  absl::Status Write(const std::function<bool()>& write) {
    {
      absl::MutexLock l(&mu_);
      if (finishing_) return EndedLocked();
    }
    if (write()) return absl::OkStatus();
    bool finish;
    {
      absl::MutexLock l(&mu_);
      // A Read in progress ends too, and its side calls Finish.
      finish = !finishing_ && !reading_;
      if (!finish) return EndedLocked();
      finishing_ = true;
    }
    return Ended(FinishStream());
  }

  // Finish (the caller set finishing_) and publish the status.
  absl::Status FinishStream() {
    grpc::Status s = payloads_ ? raw_->Finish() : events_->Finish();
    absl::MutexLock l(&mu_);
    final_ = FromGrpc(s);
    finished_ = true;
    return final_;
  }

  // The stream ended: waits for its final status, which says why.
  absl::Status EndedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    mu_.Await(absl::Condition(&finished_));
    return Ended(final_);
  }
  static absl::Status Ended(absl::Status s) {
    if (s.ok()) s = absl::UnavailableError("ingest stream closed by the server");
    s.SetPayload(kStreamEndedPayload, absl::Cord());
    return s;
  }

  std::unique_ptr<grpc::ClientContext> ctx_;
  bool payloads_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::IngestRequest, v1::IngestAck>> events_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::IngestRawRequest, v1::IngestAck>> raw_;
  uint64_t next_batch_ = 0;              // the sending side's
  std::deque<v1::IngestAck> coalesced_;  // the receiving side's: acks not yet returned
  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;    // a Read is in progress
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // someone calls (or called) Finish
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_ ABSL_GUARDED_BY(mu_);
};

// The least time a connection attempt gets (see the channel arguments).
constexpr int kMinConnectMillis = 5000;

// Reads a server stream on its own thread so Next() can time out; items are
// handed over through a small bounded queue (flow control comes from gRPC:
// the reader stops reading while the queue is full).
// Changes per subscription message the client accepts while it is behind.
constexpr uint32_t kSubscribeBatch = 256;

class RemoteSubscription : public ClientSubscription {
 public:
  RemoteSubscription(ClientImpl* client, v1::SubscribeRequest request,
                     absl::Duration reconnect_window, absl::Duration backoff)
      : client_(client),
        request_(std::move(request)),
        reconnect_window_(reconnect_window),
        backoff_(backoff) {
    StartReader();
  }
  ~RemoteSubscription() override {
    Cancel();
    if (reader_.joinable()) reader_.join();
  }

  absl::StatusOr<bool> Next(absl::Duration timeout, SubscriptionItem* item) override;
  uint64_t last_seq() const override { return last_seq_.load(); }
  void Cancel() override {
    absl::MutexLock l(&mu_);
    cancelled_ = true;
    if (ctx_) ctx_->TryCancel();
  }

 private:
  void StartReader();
  void ReadLoop(std::unique_ptr<grpc::ClientContext> ctx);

  ClientImpl* client_;
  v1::SubscribeRequest request_;
  absl::Duration reconnect_window_;
  absl::Duration backoff_;
  std::thread reader_;
  absl::Mutex mu_;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<v1::SubscribeItem> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> ended_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool in_snapshot_ = false;
  // Seq up to which every change was delivered (or filtered out): from
  // changes, snapshot_end and caught_up markers. Resumption continues after it.
  std::atomic<uint64_t> last_seq_{0};
  bool have_position_ = false;
  int attempts_ = 0;
  std::optional<absl::Time> failing_since_;
};

class ClientImpl : public Client {
 public:
  explicit ClientImpl(const ClientOptions& options) : options_(options) {}

  absl::Status Init() {
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (!options_.tls_ca_file.empty()) {
      grpc::SslCredentialsOptions ssl;
      CAIRN_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadFile(options_.tls_ca_file));
      if (!options_.tls_cert_file.empty()) {
        CAIRN_ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadFile(options_.tls_cert_file));
        CAIRN_ASSIGN_OR_RETURN(ssl.pem_private_key, ReadFile(options_.tls_key_file));
      }
      creds = grpc::SslCredentials(ssl);
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(options_.max_message_bytes);
    args.SetMaxSendMessageSize(options_.max_message_bytes);
    // Reconnect quickly after a server restart (gRPC's default starts at 1 s).
    // gRPC also takes the minimum backoff as the least time one connection
    // attempt gets (its "min connect timeout"): at 100 ms, 100 clients
    // connecting at once to a busy 2-core server saw their handshakes cut
    // off (UNAVAILABLE "tcp handshaker shutdown"), so that stays 5 s.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kMinConnectMillis);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    channel_ = grpc::CreateCustomChannel(options_.target, creds, args);
    ingest_ = v1::Ingest::NewStub(channel_);
    sessions_ = v1::Sessions::NewStub(channel_);
    query_ = v1::Query::NewStub(channel_);
    admin_ = v1::Admin::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
    return absl::OkStatus();
  }

  std::unique_ptr<grpc::ClientContext> Context(bool deadline = true) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
    if (deadline) {
      ctx->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(options_.call_timeout));
    }
    return ctx;
  }

  // Calls `rpc(ctx)` until it is not UNAVAILABLE or attempts run out.
  // `req` is checked first: a string that is not UTF-8 would fail to
  // serialize and reach the server as a message it cannot parse.
  template <typename Fn>
  absl::Status Retry(const google::protobuf::Message& req, Fn rpc) const {
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    absl::Duration backoff = options_.initial_backoff;
    grpc::Status s;
    for (int attempt = 1;; ++attempt) {
      auto ctx = Context();
      s = rpc(ctx.get());
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE || attempt >= options_.max_attempts) {
        return FromGrpc(s);
      }
      absl::SleepFor(backoff);
      backoff *= 2;
    }
  }

  absl::StatusOr<std::unique_ptr<IngestStream>> OpenIngestStream(bool payloads) override {
    return std::unique_ptr<IngestStream>(
        new IngestStreamImpl(Context(/*deadline=*/false), ingest_.get(), payloads));
  }

  absl::StatusOr<IngestResult> IngestOnce(const std::function<absl::Status(IngestStream&)>& send,
                                          bool payloads, std::vector<RecordError>* errors) {
    absl::Duration backoff = options_.initial_backoff;
    for (int attempt = 1;; ++attempt) {
      CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<IngestStream> stream, OpenIngestStream(payloads));
      absl::Status s = send(*stream);
      absl::StatusOr<IngestResult> r = s.ok() ? stream->Receive(errors) : s;
      if (r.ok() || !absl::IsUnavailable(r.status()) || attempt >= options_.max_attempts) {
        if (r.ok()) CAIRN_RETURN_IF_ERROR(stream->Close());
        return r;
      }
      absl::SleepFor(backoff);
      backoff *= 2;
    }
  }

  absl::StatusOr<IngestResult> Ingest(std::vector<Event> events, bool durable,
                                      std::vector<RecordError>* errors) override {
    return IngestOnce([&](IngestStream& s) { return s.Send(events, durable); }, false, errors);
  }

  absl::StatusOr<IngestResult> IngestPayload(std::string_view source, std::string payload,
                                             bool durable,
                                             std::vector<RecordError>* errors) override {
    return IngestOnce([&](IngestStream& s) { return s.SendPayload(source, payload, durable); },
                      true, errors);
  }

  absl::StatusOr<std::string> OpenSession(std::string_view source, std::string_view collection,
                                          SessionMode mode) override {
    v1::OpenSessionRequest req;
    req.set_source(std::string(source));
    req.set_collection(std::string(collection));
    req.set_mode(ToProto(mode));
    v1::OpenSessionResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return sessions_->Open(c, req, &resp); }));
    return resp.session_id();
  }

  absl::StatusOr<std::vector<std::string>> Upsert(const v1::SessionUpsertRequest& req) {
    v1::SessionReport resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return sessions_->Upsert(c, req, &resp); }));
    return std::vector<std::string>(resp.keys().begin(), resp.keys().end());
  }

  absl::StatusOr<std::vector<std::string>> SessionUpsert(
      std::string_view session_id, const std::vector<SessionRecord>& records) override {
    v1::SessionUpsertRequest req;
    req.set_session_id(std::string(session_id));
    for (const auto& r : records) {
      auto* out = req.add_records();
      out->set_key(r.key);
      out->set_document(r.document);
    }
    return Upsert(req);
  }

  absl::StatusOr<std::vector<std::string>> SessionUpsertPayload(std::string_view session_id,
                                                                std::string payload) override {
    v1::SessionUpsertRequest req;
    req.set_session_id(std::string(session_id));
    req.set_payload(std::move(payload));
    return Upsert(req);
  }

  absl::StatusOr<std::vector<std::string>> SessionDelete(
      std::string_view session_id, const std::vector<std::string>& keys) override {
    v1::SessionDeleteRequest req;
    req.set_session_id(std::string(session_id));
    for (const auto& k : keys) req.add_keys(k);
    v1::SessionReport resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return sessions_->Delete(c, req, &resp); }));
    return std::vector<std::string>(resp.keys().begin(), resp.keys().end());
  }

  absl::StatusOr<uint64_t> PostToSession(const v1::SessionIngestRequest& req) {
    v1::SessionIngestResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return sessions_->Ingest(c, req, &resp); }));
    return resp.total();
  }

  absl::StatusOr<uint64_t> SessionIngest(std::string_view session_id,
                                         const std::vector<Event>& events) override {
    v1::SessionIngestRequest req;
    req.set_session_id(std::string(session_id));
    for (const Event& e : events) ToProto(e, req.add_events());
    return PostToSession(req);
  }

  absl::StatusOr<uint64_t> SessionIngestPayload(std::string_view session_id,
                                                std::string payload) override {
    v1::SessionIngestRequest req;
    req.set_session_id(std::string(session_id));
    req.set_payload(std::move(payload));
    return PostToSession(req);
  }

  absl::StatusOr<IngestResult> CloseSession(std::string_view session_id, bool commit) override {
    v1::CloseSessionRequest req;
    req.set_session_id(std::string(session_id));
    req.set_commit(commit);
    v1::CloseSessionResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return sessions_->Close(c, req, &resp); }));
    return FromProto(resp);
  }

  absl::StatusOr<Entity> Get(std::string_view collection, std::string_view key) override {
    v1::GetRequest req;
    req.set_collection(std::string(collection));
    req.set_key(std::string(key));
    v1::Entity resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return query_->Get(c, req, &resp); }));
    return FromProto(resp);
  }

  absl::Status Snapshot(const SnapshotOptions& o,
                        const std::function<bool(const Entity&)>& fn) override {
    v1::SnapshotRequest req = ToProto(o);
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    auto ctx = Context(/*deadline=*/false);
    auto reader = query_->Snapshot(ctx.get(), req);
    v1::SnapshotItem item;
    while (reader->Read(&item)) {
      if (!fn(FromProto(item.entity()))) {
        ctx->TryCancel();
        reader->Finish().ok();
        return absl::OkStatus();
      }
    }
    return FromGrpc(reader->Finish());
  }

  absl::StatusOr<std::vector<Version>> History(std::string_view collection, std::string_view key,
                                               const HistoryOptions& o) override {
    v1::HistoryRequest req = ToProto(collection, key, o);
    v1::HistoryResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return query_->History(c, req, &resp); }));
    std::vector<Version> out;
    for (const auto& v : resp.versions()) out.push_back(FromProto(v));
    return out;
  }

  absl::StatusOr<std::unique_ptr<ClientSubscription>> Subscribe(const SubscribeFilter& filter,
                                                                const SubscribeStart& start,
                                                                bool include_incomplete) override {
    v1::SubscribeRequest req;
    ToProto(filter, include_incomplete, &req);
    req.set_max_batch(kSubscribeBatch);
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    switch (start.kind) {
      case SubscribeStart::Kind::kNow:
        req.set_now(true);
        break;
      case SubscribeStart::Kind::kFromSeq:
        req.set_from_seq(start.from_seq);
        break;
      case SubscribeStart::Kind::kSnapshot:
        req.set_snapshot(true);
        break;
      case SubscribeStart::Kind::kCheckpoint:
        req.set_checkpoint(start.checkpoint);
        break;
    }
    return std::unique_ptr<ClientSubscription>(new RemoteSubscription(
        this, std::move(req), options_.reconnect_window, options_.initial_backoff));
  }

  absl::Status CommitCheckpoint(std::string_view name, uint64_t seq,
                                const std::vector<std::string>& collections) override {
    v1::CommitCheckpointRequest req;
    req.set_name(std::string(name));
    req.set_seq(seq);
    for (const std::string& c : collections) req.add_collections(c);
    v1::CommitCheckpointResponse resp;
    return Retry(req,
                 [&](grpc::ClientContext* c) { return query_->CommitCheckpoint(c, req, &resp); });
  }

  absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints() override {
    std::vector<CheckpointInfo> out;
    v1::ListCheckpointsRequest req;
    for (;;) {
      v1::ListCheckpointsResponse resp;
      CAIRN_RETURN_IF_ERROR(Retry(
          req, [&](grpc::ClientContext* c) { return admin_->ListCheckpoints(c, req, &resp); }));
      for (const auto& c : resp.checkpoints()) {
        out.push_back({c.name(), c.seq(), {c.collections().begin(), c.collections().end()}});
      }
      if (resp.next().empty()) return out;
      req.set_after(resp.next());
    }
  }

  absl::Status DeleteCheckpoint(std::string_view name) override {
    v1::DeleteCheckpointRequest req;
    req.set_name(std::string(name));
    v1::DeleteCheckpointResponse resp;
    return Retry(req,
                 [&](grpc::ClientContext* c) { return admin_->DeleteCheckpoint(c, req, &resp); });
  }

  absl::StatusOr<uint64_t> GetCheckpoint(std::string_view name) override {
    v1::GetCheckpointRequest req;
    req.set_name(std::string(name));
    v1::GetCheckpointResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return query_->GetCheckpoint(c, req, &resp); }));
    return resp.seq();
  }

  absl::Status PutSource(const SourceDefinition& source) override {
    v1::PutSourceRequest req;
    ToProto(source, req.mutable_source());
    v1::PutSourceResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->PutSource(c, req, &resp); });
  }

  absl::StatusOr<SourceDefinition> GetSource(std::string_view name) override {
    v1::GetSourceRequest req;
    req.set_name(std::string(name));
    v1::Source resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->GetSource(c, req, &resp); }));
    return FromProto(resp);
  }

  absl::StatusOr<std::vector<SourceDefinition>> ListSources() override {
    v1::ListSourcesRequest req;
    v1::ListSourcesResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->ListSources(c, req, &resp); }));
    std::vector<SourceDefinition> out;
    for (const auto& s : resp.sources()) out.push_back(FromProto(s));
    return out;
  }

  absl::Status RemoveSource(std::string_view name) override {
    v1::RemoveSourceRequest req;
    req.set_name(std::string(name));
    v1::RemoveSourceResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->RemoveSource(c, req, &resp); });
  }

  absl::StatusOr<ServerStats> Stats() override {
    v1::StatsRequest req;
    v1::StatsResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->Stats(c, req, &resp); }));
    ServerStats out;
    out.store = FromProto(resp);
    for (const auto& s : resp.subscriptions()) {
      out.subscriptions.push_back({s.id(), s.delivered_seq(), s.lag()});
    }
    out.checkpoints = {resp.checkpoints().begin(), resp.checkpoints().end()};
    for (const auto& s : resp.sinks()) out.sinks.push_back(FromProto(s));
    return out;
  }

  absl::Status SetRetention(const RetentionOptions& r) override {
    v1::SetRetentionRequest req;
    *req.mutable_retention() = ToProto(r);
    v1::SetRetentionResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->SetRetention(c, req, &resp); });
  }

  absl::StatusOr<RetentionOptions> GetRetention() override {
    v1::GetRetentionRequest req;
    v1::Retention resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->GetRetention(c, req, &resp); }));
    return FromProto(resp);
  }

  absl::Status Compact() override {
    v1::CompactRequest req;
    v1::CompactResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->Compact(c, req, &resp); });
  }

  absl::StatusOr<BackupInfo> Backup(std::string_view dir) override {
    v1::BackupRequest req;
    req.set_dir(std::string(dir));
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    v1::BackupResponse resp;
    auto ctx = Context(/*deadline=*/false);
    CAIRN_RETURN_IF_ERROR(FromGrpc(admin_->Backup(ctx.get(), req, &resp)));
    return FromProto(resp.backup());
  }

  absl::Status PutConnector(const connectors::ConnectorDefinition& d) override {
    v1::PutConnectorRequest req;
    ToProto(d, req.mutable_connector());
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    v1::PutConnectorResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->PutConnector(c, req, &resp); });
  }

  absl::StatusOr<connectors::ConnectorDefinition> GetConnector(std::string_view name) override {
    v1::GetConnectorRequest req;
    req.set_name(std::string(name));
    v1::Connector resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->GetConnector(c, req, &resp); }));
    return FromProto(resp);
  }

  absl::StatusOr<std::vector<connectors::ConnectorDefinition>> ListConnectors() override {
    v1::ListConnectorsRequest req;
    v1::ListConnectorsResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->ListConnectors(c, req, &resp); }));
    std::vector<connectors::ConnectorDefinition> out;
    for (const auto& c : resp.connectors()) {
      CAIRN_ASSIGN_OR_RETURN(out.emplace_back(), FromProto(c));
    }
    return out;
  }

  absl::Status RemoveConnector(std::string_view name) override {
    v1::RemoveConnectorRequest req;
    req.set_name(std::string(name));
    v1::RemoveConnectorResponse resp;
    return Retry(req,
                 [&](grpc::ClientContext* c) { return admin_->RemoveConnector(c, req, &resp); });
  }

  absl::StatusOr<std::vector<connectors::ConnectorStatus>> ConnectorStatus(
      std::string_view name) override {
    v1::ConnectorStatusRequest req;
    req.set_name(std::string(name));
    v1::ConnectorStatusResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->ConnectorStatus(c, req, &resp); }));
    std::vector<connectors::ConnectorStatus> out;
    for (const auto& r : resp.connectors()) out.push_back(FromProto(r));
    return out;
  }

  absl::Status PutSink(const connectors::SinkDefinition& d, bool from_now) override {
    v1::PutSinkRequest req;
    ToProto(d, req.mutable_sink());
    if (from_now) req.mutable_sink()->clear_from_seq();
    CAIRN_RETURN_IF_ERROR(wire::CheckUtf8(req));
    v1::PutSinkResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->PutSink(c, req, &resp); });
  }

  absl::StatusOr<connectors::SinkDefinition> GetSink(std::string_view name) override {
    v1::GetSinkRequest req;
    req.set_name(std::string(name));
    v1::Sink resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->GetSink(c, req, &resp); }));
    return FromProto(resp);
  }

  absl::StatusOr<std::vector<connectors::SinkDefinition>> ListSinks() override {
    v1::ListSinksRequest req;
    v1::ListSinksResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->ListSinks(c, req, &resp); }));
    std::vector<connectors::SinkDefinition> out;
    for (const auto& s : resp.sinks()) {
      CAIRN_ASSIGN_OR_RETURN(out.emplace_back(), FromProto(s));
    }
    return out;
  }

  absl::Status RemoveSink(std::string_view name) override {
    v1::RemoveSinkRequest req;
    req.set_name(std::string(name));
    v1::RemoveSinkResponse resp;
    return Retry(req, [&](grpc::ClientContext* c) { return admin_->RemoveSink(c, req, &resp); });
  }

  absl::StatusOr<std::vector<connectors::SinkStatus>> SinkStatus(std::string_view name) override {
    v1::SinkStatusRequest req;
    req.set_name(std::string(name));
    v1::SinkStatusResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->SinkStatus(c, req, &resp); }));
    std::vector<connectors::SinkStatus> out;
    for (const auto& r : resp.sinks()) out.push_back(FromProto(r));
    return out;
  }

  absl::StatusOr<std::vector<connectors::DeadLetter>> ListDeadLetters(
      std::string_view name) override {
    v1::ListDeadLettersRequest req;
    req.set_name(std::string(name));
    v1::ListDeadLettersResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return admin_->ListDeadLetters(c, req, &resp); }));
    std::vector<connectors::DeadLetter> out;
    for (const auto& d : resp.dead_letters()) out.push_back(FromProto(d));
    return out;
  }

  absl::StatusOr<uint64_t> ReplayDeadLetters(std::string_view name) override {
    v1::ReplayDeadLettersRequest req;
    req.set_name(std::string(name));
    v1::ReplayDeadLettersResponse resp;
    auto ctx = Context(/*deadline=*/false);  // not retried: it would post them all again
    CAIRN_RETURN_IF_ERROR(FromGrpc(admin_->ReplayDeadLetters(ctx.get(), req, &resp)));
    return resp.replayed();
  }

  absl::Status Health() override {
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    CAIRN_RETURN_IF_ERROR(
        Retry(req, [&](grpc::ClientContext* c) { return health_->Check(c, req, &resp); }));
    if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::UnavailableError("server is not serving");
    }
    return absl::OkStatus();
  }

  v1::Query::Stub* query() { return query_.get(); }

 private:
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ingest::Stub> ingest_;
  std::unique_ptr<v1::Sessions::Stub> sessions_;
  std::unique_ptr<v1::Query::Stub> query_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

void RemoteSubscription::StartReader() {
  auto ctx = client_->Context(/*deadline=*/false);
  {
    absl::MutexLock l(&mu_);
    ctx_ = ctx.get();
    ended_.reset();
  }
  in_snapshot_ = request_.start_case() == v1::SubscribeRequest::kSnapshot;
  reader_ = std::thread([this, c = std::move(ctx)]() mutable { ReadLoop(std::move(c)); });
}

void RemoteSubscription::ReadLoop(std::unique_ptr<grpc::ClientContext> ctx) {
  auto reader = client_->query()->Subscribe(ctx.get(), request_);
  v1::SubscribeItem item;
  while (reader->Read(&item)) {
    absl::MutexLock l(&mu_);
    // Bounded hand-over: wait while the consumer is behind.
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.size() < 1024 || cancelled_;
    };
    mu_.Await(absl::Condition(&room));
    if (cancelled_) break;
    // A batch (max_batch) is handed out one change per Next.
    google::protobuf::RepeatedPtrField<v1::Change> more;
    more.Swap(item.mutable_more_changes());
    queue_.push_back(std::move(item));
    for (v1::Change& c : more) {
      v1::SubscribeItem single;
      *single.mutable_change() = std::move(c);
      queue_.push_back(std::move(single));
    }
  }
  grpc::Status s = reader->Finish();
  absl::MutexLock l(&mu_);
  ctx_ = nullptr;
  ended_ = s;
}

absl::StatusOr<bool> RemoteSubscription::Next(absl::Duration timeout, SubscriptionItem* out) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::optional<grpc::Status> ended;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || ended_.has_value() || cancelled_;
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) return false;
      if (cancelled_) return absl::CancelledError("subscription cancelled");
      if (!queue_.empty()) {
        v1::SubscribeItem item = std::move(queue_.front());
        queue_.pop_front();
        attempts_ = 0;
        failing_since_.reset();
        if (!FromProto(item, out)) continue;  // a kind this build does not know
        switch (out->kind) {
          case SubscriptionItem::Kind::kSnapshotEntity:
            break;
          case SubscriptionItem::Kind::kSnapshotEnd:
            in_snapshot_ = false;
            [[fallthrough]];
          case SubscriptionItem::Kind::kCaughtUp:
            last_seq_.store(out->seq);
            have_position_ = true;
            break;
          case SubscriptionItem::Kind::kChange:
            last_seq_.store(out->change.seq);
            have_position_ = true;
            break;
        }
        return true;
      }
      ended = ended_;
    }
    // The stream ended. Resume after the last delivered change if the server
    // went away; anything else is the caller's to see.
    if (!failing_since_) failing_since_ = absl::Now();
    if (ended->error_code() != grpc::StatusCode::UNAVAILABLE || in_snapshot_ ||
        absl::Now() - *failing_since_ >= reconnect_window_) {
      return FromGrpc(ended->ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                                 "subscription ended by the server")
                                  : *ended);
    }
    reader_.join();
    absl::SleepFor(backoff_ * (1 << std::min(attempts_++, 5)));
    // Without a position yet (nothing arrived), the original start is right.
    if (have_position_) request_.set_from_seq(last_seq_.load());
    StartReader();
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  auto client = std::make_unique<ClientImpl>(options);
  CAIRN_RETURN_IF_ERROR(client->Init());
  return std::unique_ptr<Client>(std::move(client));
}

}  // namespace cairn::client
