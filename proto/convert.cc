#include "convert.h"

#include <algorithm>
#include <map>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "google/protobuf/unknown_field_set.h"

namespace cairn::wire {

namespace {

// At most `limit` bytes of `message` from its start, whole characters only;
// *consumed is how much of `message` they cover.
std::string ValidPrefix(std::string_view message, size_t limit, size_t* consumed) {
  std::string out;
  out.reserve(std::min(message.size(), limit));
  size_t i = 0;
  while (i < message.size()) {
    // One character at a time: valid sequences are kept, a byte that starts
    // none becomes U+FFFD (a status message travels in a protobuf string).
    size_t n = 1;
    auto c = static_cast<unsigned char>(message[i]);
    if (c >= 0x80) n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    std::string_view ch = message.substr(i, n);
    bool valid = c < 0x80 || (ch.size() == n && n > 1 && IsValidUtf8(ch));
    std::string_view piece = valid ? ch : std::string_view("\xEF\xBF\xBD");
    if (out.size() + piece.size() > limit) break;
    out.append(piece);
    i += valid ? n : 1;
  }
  *consumed = i;
  return out;
}

}  // namespace

std::string WireMessage(std::string_view message, size_t max_bytes) {
  size_t consumed = 0;
  std::string out = ValidPrefix(message, max_bytes, &consumed);
  if (consumed == message.size()) return out;
  // Cut: what is kept and the note of the whole size fit max_bytes together.
  std::string note = absl::StrCat("\xE2\x80\xA6 (", message.size(), " bytes)");
  out = ValidPrefix(message, max_bytes > note.size() ? max_bytes - note.size() : 0, &consumed);
  return out + note;
}

namespace {

absl::Status CheckUtf8At(const google::protobuf::Message& m, const std::string& prefix) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    bool text = f->type() == FieldDescriptor::TYPE_STRING;
    bool message = f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE;
    if (!text && !message) continue;
    int n = f->is_repeated() ? r->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      std::string at = f->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (message) {
        CAIRN_RETURN_IF_ERROR(CheckUtf8At(
            f->is_repeated() ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f), at));
        continue;
      }
      std::string scratch;
      const std::string& v = f->is_repeated() ? r->GetRepeatedStringReference(m, f, i, &scratch)
                                              : r->GetStringReference(m, f, &scratch);
      if (!IsValidUtf8(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(at, " is not valid UTF-8 (cairn takes text as UTF-8)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckUtf8(const google::protobuf::Message& m) { return CheckUtf8At(m, ""); }

namespace {

// Walks a message parsed without its schema alongside the schema `d`.
bool FindBadUtf8(const google::protobuf::Descriptor* d, const google::protobuf::UnknownFieldSet& fs,
                 const std::string& prefix, int depth, std::string* path) {
  using google::protobuf::FieldDescriptor;
  using google::protobuf::UnknownField;
  if (depth > 32) return false;
  std::map<int, int> seen;  // repeated fields: the index of each occurrence
  for (int i = 0; i < fs.field_count(); ++i) {
    const UnknownField& f = fs.field(i);
    const FieldDescriptor* fd = d->FindFieldByNumber(f.number());
    if (fd == nullptr || f.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    int k = seen[f.number()]++;
    std::string name = prefix.empty() ? fd->name() : absl::StrCat(prefix, ".", fd->name());
    if (fd->is_repeated()) absl::StrAppend(&name, "[", k, "]");
    if (fd->type() == FieldDescriptor::TYPE_STRING && !IsValidUtf8(f.length_delimited())) {
      *path = name;
      return true;
    }
    if (fd->type() == FieldDescriptor::TYPE_MESSAGE) {
      google::protobuf::UnknownFieldSet sub;
      if (sub.ParseFromString(f.length_delimited()) &&
          FindBadUtf8(fd->message_type(), sub, name, depth + 1, path)) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::string WhyUnparsable(const google::protobuf::Descriptor* d, std::string_view bytes) {
  google::protobuf::UnknownFieldSet fields;
  if (!fields.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return "it is not a protobuf message";
  }
  std::string path;
  if (FindBadUtf8(d, fields, "", 0, &path)) return absl::StrCat(path, " is not valid UTF-8");
  return "a field does not hold what its type says";
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  // absl's canonical codes are gRPC's codes, number for number. The message
  // is bounded: it travels in a header that clients cap (8 KiB by default).
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      WireMessage(StdView(s.message()), kMaxStatusMessageBytes));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

v1::Position ToProto(Position p) {
  v1::Position out;
  out.set_timestamp(p.timestamp);
  out.set_tick(p.tick);
  return out;
}

Position FromProto(const v1::Position& p) { return {p.timestamp(), p.tick()}; }

void ToProto(const Entity& e, v1::Entity* out) {
  out->set_collection(e.collection);
  out->set_key(e.key);
  out->set_document(e.document);
  out->set_complete(e.complete);
  *out->mutable_position() = ToProto(e.position);
  out->set_source(e.source);
  out->set_seq(e.seq);
}

void ToProto(const Change& c, v1::Change* out) {
  out->set_seq(c.seq);
  out->set_collection(c.collection);
  out->set_key(c.key);
  out->set_op(static_cast<v1::Op>(c.op));
  out->set_before(c.before);
  out->set_after(c.after);
  *out->mutable_position() = ToProto(c.position);
  out->set_source(c.source);
  out->set_complete(c.complete);
}

void ToProto(const Version& v, v1::Version* out) {
  out->set_op(static_cast<v1::Op>(v.op));
  *out->mutable_position() = ToProto(v.position);
  out->set_source(v.source);
  out->set_seq(v.seq);
  out->set_snapshot(v.snapshot);
  out->set_complete(v.complete);
  out->set_before(v.before);
  out->set_after(v.after);
}

void ToProto(const IngestResult& r, v1::IngestAck* out) {
  out->set_code(0);
  out->set_first_seq(r.first_seq);
  out->set_last_seq(r.last_seq);
  out->set_applied(r.applied);
  out->set_duplicates(r.duplicates);
  out->set_conflicts(r.conflicts);
  for (Outcome o : r.outcomes) out->add_outcomes(static_cast<v1::Outcome>(o));
}

void ToProto(const SourceDefinition& s, v1::Source* out) {
  out->set_name(s.name);
  out->set_format(s.format);
  for (const auto& [collection, fields] : s.key_fields) {
    auto& k = (*out->mutable_key_fields())[collection];
    for (const auto& f : fields) k.add_fields(f);
  }
  for (const auto& [from, to] : s.collection_map) (*out->mutable_collection_map())[from] = to;
  out->set_default_collection(s.default_collection);
  for (const auto& [c, schema] : s.json_schemas) (*out->mutable_json_schemas())[c] = schema;
}

SourceDefinition FromProto(const v1::Source& s) {
  SourceDefinition d;
  d.name = s.name();
  d.format = s.format();
  for (const auto& [collection, keys] : s.key_fields()) {
    d.key_fields[collection] = {keys.fields().begin(), keys.fields().end()};
  }
  d.collection_map = {s.collection_map().begin(), s.collection_map().end()};
  d.default_collection = s.default_collection();
  d.json_schemas = {s.json_schemas().begin(), s.json_schemas().end()};
  return d;
}

void ToProto(const connectors::ConnectorDefinition& d, v1::Connector* out) {
  out->set_name(d.name);
  out->set_type(d.type);
  out->set_source(d.source);
  for (const std::string& u : d.urls) out->add_urls(u);
  for (const auto& [k, v] : d.headers) (*out->mutable_headers())[k] = v;
  out->set_ca_file(d.ca_file);
  out->set_retention_seconds(absl::ToInt64Seconds(d.retention));
  out->set_batch_events(d.batch_events);
  out->set_batch_millis(absl::ToInt64Milliseconds(d.batch_time));
  out->set_durable(d.durable);
  out->set_on_error(d.on_error == connectors::OnError::kSkip ? "skip" : "stop");
  out->set_initial_backoff_millis(absl::ToInt64Milliseconds(d.initial_backoff));
  out->set_max_backoff_millis(absl::ToInt64Milliseconds(d.max_backoff));
  out->set_idle_timeout_seconds(absl::ToInt64Seconds(d.idle_timeout));
  out->set_stream(d.stream);
  out->set_filter_subject(d.filter_subject);
  out->set_consumer(d.consumer);
  for (const auto& [k, v] : d.subjects) (*out->mutable_subjects())[k] = v;
}

absl::StatusOr<connectors::ConnectorDefinition> FromProto(const v1::Connector& c) {
  connectors::ConnectorDefinition d;
  d.name = c.name();
  if (!c.type().empty()) d.type = c.type();
  d.source = c.source();
  d.urls = {c.urls().begin(), c.urls().end()};
  d.headers = {c.headers().begin(), c.headers().end()};
  d.ca_file = c.ca_file();
  d.stream = c.stream();
  d.filter_subject = c.filter_subject();
  d.consumer = c.consumer();
  d.subjects = {c.subjects().begin(), c.subjects().end()};
  // Bounded here so that no conversion overflows; connectors::Check bounds
  // the rest.
  constexpr uint64_t kMaxSeconds = uint64_t{10} * 365 * 86400;
  auto seconds = [&](const char* field, uint64_t v) -> absl::StatusOr<absl::Duration> {
    if (v > kMaxSeconds) {
      return absl::InvalidArgumentError(
          absl::StrCat("connector.", field, " ", v, " is out of range: 0 to ", kMaxSeconds));
    }
    return absl::Seconds(v);
  };
  auto millis = [&](const char* field, uint64_t v) -> absl::StatusOr<absl::Duration> {
    if (v > kMaxSeconds * 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat("connector.", field, " ", v, " is out of range: 0 to ", kMaxSeconds * 1000));
    }
    return absl::Milliseconds(v);
  };
  if (c.has_retention_seconds()) {
    CAIRN_ASSIGN_OR_RETURN(d.retention, seconds("retention_seconds", c.retention_seconds()));
  }
  if (c.has_batch_events()) d.batch_events = c.batch_events();
  if (c.has_batch_millis()) {
    CAIRN_ASSIGN_OR_RETURN(d.batch_time, millis("batch_millis", c.batch_millis()));
  }
  d.durable = c.durable();
  if (c.on_error() == "skip") {
    d.on_error = connectors::OnError::kSkip;
  } else if (!c.on_error().empty() && c.on_error() != "stop") {
    return absl::InvalidArgumentError(
        absl::StrCat("connector.on_error \"", Excerpt(c.on_error()), "\" is not stop or skip"));
  }
  if (c.has_initial_backoff_millis()) {
    CAIRN_ASSIGN_OR_RETURN(d.initial_backoff,
                           millis("initial_backoff_millis", c.initial_backoff_millis()));
  }
  if (c.has_max_backoff_millis()) {
    CAIRN_ASSIGN_OR_RETURN(d.max_backoff, millis("max_backoff_millis", c.max_backoff_millis()));
  }
  if (c.has_idle_timeout_seconds()) {
    CAIRN_ASSIGN_OR_RETURN(d.idle_timeout,
                           seconds("idle_timeout_seconds", c.idle_timeout_seconds()));
  }
  return d;
}

void ToProto(const connectors::ConnectorStatus& s, v1::ConnectorReport* out) {
  out->set_name(s.name);
  out->set_state(s.state);
  for (const connectors::UrlStatus& u : s.urls) {
    v1::ConnectorUrlReport* r = out->add_urls();
    r->set_url(u.url);
    r->set_state(u.state);
    r->set_last_event_id(u.last_event_id);
    *r->mutable_last_position() = ToProto(u.last_position);
    r->set_last_commit_unix_micros(u.last_commit_unix_micros);
    r->set_events(u.events);
    r->set_applied(u.applied);
    r->set_duplicates(u.duplicates);
    r->set_skipped(u.skipped);
    r->set_reconnects(u.reconnects);
    r->set_gaps(u.gaps);
    r->set_last_error(u.last_error);
    r->set_last_error_unix_micros(u.last_error_unix_micros);
  }
}

connectors::ConnectorStatus FromProto(const v1::ConnectorReport& r) {
  connectors::ConnectorStatus s{.name = r.name(), .state = r.state()};
  for (const v1::ConnectorUrlReport& u : r.urls()) {
    s.urls.push_back({.url = u.url(),
                      .state = u.state(),
                      .last_event_id = u.last_event_id(),
                      .last_position = FromProto(u.last_position()),
                      .last_commit_unix_micros = u.last_commit_unix_micros(),
                      .events = u.events(),
                      .applied = u.applied(),
                      .duplicates = u.duplicates(),
                      .skipped = u.skipped(),
                      .reconnects = u.reconnects(),
                      .gaps = u.gaps(),
                      .last_error = u.last_error(),
                      .last_error_unix_micros = u.last_error_unix_micros()});
  }
  return s;
}

void ToProto(const connectors::SinkDefinition& d, v1::Sink* out) {
  out->set_name(d.name);
  out->set_type(d.type);
  out->set_url(d.url);
  for (const auto& [k, v] : d.headers) (*out->mutable_headers())[k] = v;
  out->set_ca_file(d.ca_file);
  out->set_shape(d.shape);
  for (const auto& x : d.filter.sources) out->add_sources(x);
  for (const auto& x : d.filter.collections) out->add_collections(x);
  out->set_key_prefix(d.filter.key_prefix);
  for (const auto& x : d.filter.keys) out->add_keys(x);
  out->set_from_seq(d.from_seq);
  out->set_batch_changes(d.batch_changes);
  out->set_timeout_millis(absl::ToInt64Milliseconds(d.timeout));
  out->set_initial_backoff_millis(absl::ToInt64Milliseconds(d.initial_backoff));
  out->set_max_backoff_millis(absl::ToInt64Milliseconds(d.max_backoff));
  out->set_subject(d.subject);
  out->set_omnia_schema(d.omnia_schema);
}

absl::StatusOr<connectors::SinkDefinition> FromProto(const v1::Sink& s) {
  connectors::SinkDefinition d;
  d.name = s.name();
  if (!s.type().empty()) d.type = s.type();
  d.url = s.url();
  d.headers = {s.headers().begin(), s.headers().end()};
  d.ca_file = s.ca_file();
  if (!s.shape().empty()) d.shape = s.shape();
  if (!s.subject().empty()) d.subject = s.subject();
  if (!s.omnia_schema().empty()) d.omnia_schema = s.omnia_schema();
  d.filter.sources = {s.sources().begin(), s.sources().end()};
  d.filter.collections = {s.collections().begin(), s.collections().end()};
  d.filter.key_prefix = s.key_prefix();
  d.filter.keys = {s.keys().begin(), s.keys().end()};
  d.from_seq = s.from_seq();
  if (s.has_batch_changes()) d.batch_changes = s.batch_changes();
  constexpr uint64_t kMaxMillis = uint64_t{3600} * 1000;
  for (auto [has, v, field, out] :
       {std::tuple{s.has_timeout_millis(), s.timeout_millis(), "timeout_millis", &d.timeout},
        std::tuple{s.has_initial_backoff_millis(), s.initial_backoff_millis(),
                   "initial_backoff_millis", &d.initial_backoff},
        std::tuple{s.has_max_backoff_millis(), s.max_backoff_millis(), "max_backoff_millis",
                   &d.max_backoff}}) {
    if (!has) continue;
    if (v > kMaxMillis) {
      return absl::InvalidArgumentError(
          absl::StrCat("sink.", field, " ", v, " is out of range: 0 to ", kMaxMillis));
    }
    *out = absl::Milliseconds(v);
  }
  return d;
}

void ToProto(const connectors::SinkStatus& s, v1::SinkReport* out) {
  out->set_name(s.name);
  out->set_state(s.state);
  out->set_checkpoint_seq(s.checkpoint_seq);
  out->set_lag_seqs(s.lag_seqs);
  out->set_lag_seconds(s.lag_seconds);
  out->set_delivered(s.delivered);
  out->set_retries(s.retries);
  out->set_dead_letters(s.dead_letters);
  out->set_last_error(s.last_error);
  out->set_last_error_unix_micros(s.last_error_unix_micros);
}

connectors::SinkStatus FromProto(const v1::SinkReport& r) {
  return {.name = r.name(),
          .state = r.state(),
          .checkpoint_seq = r.checkpoint_seq(),
          .lag_seqs = r.lag_seqs(),
          .lag_seconds = r.lag_seconds(),
          .delivered = r.delivered(),
          .retries = r.retries(),
          .dead_letters = r.dead_letters(),
          .last_error = r.last_error(),
          .last_error_unix_micros = r.last_error_unix_micros()};
}

void ToProto(const connectors::DeadLetter& d, v1::DeadLetter* out) {
  out->set_seq(d.seq);
  out->set_http_status(d.http_status);
  out->set_response(d.response);
  out->set_message(d.message);
  out->set_unix_micros(d.unix_micros);
  out->set_subject(d.subject);
}

connectors::DeadLetter FromProto(const v1::DeadLetter& d) {
  return {.seq = d.seq(),
          .http_status = d.http_status(),
          .response = d.response(),
          .message = d.message(),
          .subject = d.subject(),
          .unix_micros = d.unix_micros()};
}

Entity FromProto(const v1::Entity& e) {
  return Entity{.collection = e.collection(),
                .key = e.key(),
                .document = e.document(),
                .complete = e.complete(),
                .position = FromProto(e.position()),
                .source = e.source(),
                .seq = e.seq()};
}

Change FromProto(const v1::Change& c) {
  return Change{.seq = c.seq(),
                .collection = c.collection(),
                .key = c.key(),
                .op = static_cast<Op>(c.op()),
                .before = c.before(),
                .after = c.after(),
                .position = FromProto(c.position()),
                .source = c.source(),
                .complete = c.complete()};
}

Version FromProto(const v1::Version& v) {
  return Version{.op = static_cast<Op>(v.op()),
                 .position = FromProto(v.position()),
                 .source = v.source(),
                 .seq = v.seq(),
                 .snapshot = v.snapshot(),
                 .complete = v.complete(),
                 .before = v.before(),
                 .after = v.after()};
}

IngestResult FromProto(const v1::IngestAck& ack) {
  IngestResult r{.first_seq = ack.first_seq(),
                 .last_seq = ack.last_seq(),
                 .applied = ack.applied(),
                 .duplicates = ack.duplicates(),
                 .conflicts = ack.conflicts()};
  for (int o : ack.outcomes()) r.outcomes.push_back(static_cast<Outcome>(o));
  return r;
}

void ToProto(const Event& e, v1::Event* out) {
  out->set_source(e.source);
  out->set_collection(e.collection);
  out->set_key(e.key);
  *out->mutable_position() = ToProto(e.position);
  out->set_op(static_cast<v1::Op>(e.op));
  out->set_payload(e.payload);
  out->set_snapshot(e.snapshot);
  out->set_event_id(e.event_id);
  out->set_raw(e.raw);
}

absl::StatusOr<std::vector<Event>> FromProto(
    const google::protobuf::RepeatedPtrField<v1::Event>& events) {
  std::vector<Event> out;
  out.reserve(events.size());
  for (int i = 0; i < events.size(); ++i) {
    const v1::Event& e = events[i];
    if (e.op() < v1::OP_UPSERT || e.op() > v1::OP_TRUNCATE) {
      return absl::InvalidArgumentError(
          absl::StrCat("event ", i, ": unknown op ", static_cast<int>(e.op())));
    }
    out.push_back(Event{.source = e.source(),
                        .collection = e.collection(),
                        .key = e.key(),
                        .position = FromProto(e.position()),
                        .op = static_cast<Op>(e.op()),
                        .payload = e.payload(),
                        .snapshot = e.snapshot(),
                        .event_id = e.event_id(),
                        .raw = e.raw()});
  }
  return out;
}

absl::Status AckStatus(const v1::IngestAck& ack) {
  if (ack.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(ack.code()), ack.message());
}

v1::SessionMode ToProto(SessionMode m) { return static_cast<v1::SessionMode>(m); }
SessionMode FromProto(v1::SessionMode m) { return static_cast<SessionMode>(m); }

void ToProto(const IngestResult& r, v1::CloseSessionResponse* out) {
  out->set_first_seq(r.first_seq);
  out->set_last_seq(r.last_seq);
  out->set_applied(r.applied);
  out->set_duplicates(r.duplicates);
  out->set_conflicts(r.conflicts);
}

IngestResult FromProto(const v1::CloseSessionResponse& r) {
  return IngestResult{.first_seq = r.first_seq(),
                      .last_seq = r.last_seq(),
                      .applied = r.applied(),
                      .duplicates = r.duplicates(),
                      .conflicts = r.conflicts()};
}

v1::SnapshotRequest ToProto(const SnapshotOptions& o) {
  v1::SnapshotRequest req;
  if (o.as_of_seq) req.set_seq(*o.as_of_seq);
  if (o.as_of_position) *req.mutable_position() = ToProto(*o.as_of_position);
  req.set_collection(o.collection);
  req.set_key_prefix(o.key_prefix);
  req.set_exclude_incomplete(!o.include_incomplete);
  return req;
}

SnapshotOptions FromProto(const v1::SnapshotRequest& r) {
  SnapshotOptions o{.collection = r.collection(),
                    .key_prefix = r.key_prefix(),
                    .include_incomplete = !r.exclude_incomplete()};
  if (r.has_seq()) o.as_of_seq = r.seq();
  if (r.has_position()) o.as_of_position = FromProto(r.position());
  return o;
}

v1::HistoryRequest ToProto(std::string_view collection, std::string_view key,
                           const HistoryOptions& o) {
  v1::HistoryRequest req;
  req.set_collection(std::string(collection));
  req.set_key(std::string(key));
  req.set_reverse(o.reverse);
  if (o.from_position) *req.mutable_from_position() = ToProto(*o.from_position);
  if (o.to_position) *req.mutable_to_position() = ToProto(*o.to_position);
  // 0 on the wire means "no bound": seq 0 is before every change anyway.
  req.set_from_seq(o.from_seq.value_or(0));
  req.set_to_seq(o.to_seq.value_or(0));
  req.set_limit(static_cast<uint32_t>(o.limit));
  return req;
}

HistoryOptions FromProto(const v1::HistoryRequest& r) {
  HistoryOptions o{.reverse = r.reverse(), .limit = r.limit()};
  if (r.has_from_position()) o.from_position = FromProto(r.from_position());
  if (r.has_to_position()) o.to_position = FromProto(r.to_position());
  if (r.from_seq()) o.from_seq = r.from_seq();
  if (r.to_seq()) o.to_seq = r.to_seq();
  return o;
}

void ToProto(const SubscribeFilter& filter, bool include_incomplete, v1::SubscribeRequest* out) {
  for (const auto& s : filter.sources) out->add_sources(s);
  for (const auto& c : filter.collections) out->add_collections(c);
  out->set_key_prefix(filter.key_prefix);
  for (const auto& k : filter.keys) out->add_keys(k);
  out->set_exclude_incomplete(!include_incomplete);
}

SubscribeOptions FromProto(const v1::SubscribeRequest& r) {
  SubscribeOptions o;
  o.filter = {.sources = {r.sources().begin(), r.sources().end()},
              .collections = {r.collections().begin(), r.collections().end()},
              .key_prefix = r.key_prefix(),
              .keys = {r.keys().begin(), r.keys().end()}};
  o.include_incomplete = !r.exclude_incomplete();
  switch (r.start_case()) {
    case v1::SubscribeRequest::kFromSeq:
      o.start = SubscribeOptions::Start::kFromSeq;
      o.from_seq = r.from_seq();
      break;
    case v1::SubscribeRequest::kSnapshot:
      o.start = SubscribeOptions::Start::kSnapshot;
      break;
    default:
      o.start = SubscribeOptions::Start::kNow;
  }
  return o;
}

void ToProto(const SubscriptionItem& item, v1::SubscribeItem* out) {
  switch (item.kind) {
    case SubscriptionItem::Kind::kSnapshotEntity:
      ToProto(item.entity, out->mutable_snapshot_entity());
      break;
    case SubscriptionItem::Kind::kSnapshotEnd:
      out->set_snapshot_end(item.seq);
      break;
    case SubscriptionItem::Kind::kChange:
      ToProto(item.change, out->mutable_change());
      break;
    case SubscriptionItem::Kind::kCaughtUp:
      out->set_caught_up(item.seq);
      break;
  }
}

bool FromProto(const v1::SubscribeItem& in, SubscriptionItem* out) {
  switch (in.item_case()) {
    case v1::SubscribeItem::kSnapshotEntity:
      out->kind = SubscriptionItem::Kind::kSnapshotEntity;
      out->entity = FromProto(in.snapshot_entity());
      return true;
    case v1::SubscribeItem::kSnapshotEnd:
      out->kind = SubscriptionItem::Kind::kSnapshotEnd;
      out->seq = in.snapshot_end();
      return true;
    case v1::SubscribeItem::kChange:
      out->kind = SubscriptionItem::Kind::kChange;
      out->change = FromProto(in.change());
      return true;
    case v1::SubscribeItem::kCaughtUp:
      out->kind = SubscriptionItem::Kind::kCaughtUp;
      out->seq = in.caught_up();
      return true;
    default:
      return false;
  }
}

void ToProto(const SourceStats& s, v1::SourceStats* out) {
  out->set_accepted(s.accepted);
  out->set_duplicates(s.duplicates);
  out->set_conflicts(s.conflicts);
  out->set_rejected_batches(s.rejected_batches);
  *out->mutable_last_position() = ToProto(s.last_position);
}

SourceStats FromProto(const v1::SourceStats& s) {
  return SourceStats{.accepted = s.accepted(),
                     .duplicates = s.duplicates(),
                     .conflicts = s.conflicts(),
                     .rejected_batches = s.rejected_batches(),
                     .last_position = FromProto(s.last_position())};
}

void ToProto(const StoreStats& s, int max_sources, v1::StatsResponse* out) {
  out->set_last_seq(s.last_seq);
  out->set_oldest_seq(s.oldest_seq);
  *out->mutable_oldest_position() = ToProto(s.oldest_position);
  const StoreStats::Resources& r = s.resources;
  v1::Resources* res = out->mutable_resources();
  res->set_memory_budget(r.memory_budget);
  res->set_block_cache_capacity(r.block_cache_capacity);
  res->set_block_cache_usage(r.block_cache_usage);
  res->set_memtables(r.memtables);
  res->set_recent_changes(r.recent_changes);
  res->set_reserved(r.reserved);
  res->set_subscriber_buffers(r.subscriber_buffers);
  res->set_wal_bytes(r.wal_bytes);
  res->set_wal_files(r.wal_files);
  res->set_sst_bytes(r.sst_bytes);
  res->set_pending_compaction_bytes(r.pending_compaction_bytes);
  for (const auto& [name, source] : s.sources) {
    if (out->sources_size() >= max_sources) {
      out->set_truncated(true);
      break;
    }
    ToProto(source, &(*out->mutable_sources())[name]);
  }
  const StoreStats::Backups& b = s.backups;
  v1::BackupStats* backups = out->mutable_backups();
  backups->set_count(b.count);
  backups->set_errors(b.errors);
  backups->set_last_error(b.last_error);
  backups->set_last_duration_micros(b.last_duration_micros);
  if (b.last_id != 0) {
    v1::Backup* last = backups->mutable_last();
    last->set_id(b.last_id);
    last->set_seq(b.last_seq);
    last->set_created_unix_micros(b.last_unix_micros);
    last->set_size_bytes(b.last_size_bytes);
    last->set_copied_bytes(b.last_copied_bytes);
  }
  v1::Versions* versions = out->mutable_versions();
  versions->set_cairn(s.versions.cairn);
  versions->set_format(s.versions.format);
  versions->set_created_by(s.versions.created_by);
  versions->set_previously_opened_by(s.versions.previously_opened_by);
}

v1::Backup ToProto(const BackupInfo& b) {
  v1::Backup out;
  out.set_id(b.id);
  out.set_seq(b.seq);
  out.set_created_unix_micros(absl::ToUnixMicros(b.created));
  out.set_size_bytes(b.size_bytes);
  out.set_copied_bytes(b.copied_bytes);
  out.set_files(b.files);
  return out;
}

BackupInfo FromProto(const v1::Backup& b) {
  return {.id = b.id(),
          .seq = b.seq(),
          .created = absl::FromUnixMicros(b.created_unix_micros()),
          .size_bytes = b.size_bytes(),
          .copied_bytes = b.copied_bytes(),
          .files = b.files()};
}

StoreStats FromProto(const v1::StatsResponse& r) {
  StoreStats s{.last_seq = r.last_seq(),
               .oldest_seq = r.oldest_seq(),
               .oldest_position = FromProto(r.oldest_position())};
  const v1::Resources& res = r.resources();
  s.resources = {.memory_budget = res.memory_budget(),
                 .block_cache_capacity = res.block_cache_capacity(),
                 .block_cache_usage = res.block_cache_usage(),
                 .memtables = res.memtables(),
                 .recent_changes = res.recent_changes(),
                 .reserved = res.reserved(),
                 .subscriber_buffers = res.subscriber_buffers(),
                 .wal_bytes = res.wal_bytes(),
                 .wal_files = res.wal_files(),
                 .sst_bytes = res.sst_bytes(),
                 .pending_compaction_bytes = res.pending_compaction_bytes()};
  for (const auto& [name, source] : r.sources()) s.sources[name] = FromProto(source);
  const v1::BackupStats& b = r.backups();
  s.backups = {.count = b.count(),
               .errors = b.errors(),
               .last_id = b.last().id(),
               .last_seq = b.last().seq(),
               .last_unix_micros = b.last().created_unix_micros(),
               .last_size_bytes = b.last().size_bytes(),
               .last_copied_bytes = b.last().copied_bytes(),
               .last_duration_micros = b.last_duration_micros(),
               .last_error = b.last_error()};
  const v1::Versions& v = r.versions();
  s.versions = {.cairn = v.cairn(),
                .format = v.format(),
                .created_by = v.created_by(),
                .previously_opened_by = v.previously_opened_by()};
  return s;
}

v1::Retention ToProto(const RetentionOptions& r) {
  v1::Retention out;
  if (r.max_age) out.set_max_age_seconds(absl::ToInt64Seconds(*r.max_age));
  if (r.max_commits) out.set_max_commits(*r.max_commits);
  return out;
}

absl::StatusOr<RetentionOptions> FromProto(const v1::Retention& r) {
  if (r.max_age_seconds() > kMaxRetentionSeconds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "retention.max_age_seconds ", r.max_age_seconds(), " is out of range: 0 (no age limit) to ",
        kMaxRetentionSeconds, " (100 years)"));
  }
  RetentionOptions out;
  if (r.max_age_seconds()) out.max_age = absl::Seconds(static_cast<int64_t>(r.max_age_seconds()));
  if (r.max_commits()) out.max_commits = r.max_commits();
  return out;
}

void FailAck(const absl::Status& s, v1::IngestAck* ack) {
  ack->set_code(static_cast<int32_t>(s.code()));
  std::string msg = WireMessage(StdView(s.message()), kMaxAckMessageBytes);
  ack->set_message(msg);
  // "record N: ..." at the start or after "; " (bitbroker joins every bad
  // record so). A message may quote user text that looks alike: an index
  // that does not fit 64 bits is not one (and must not throw).
  static const std::regex kIndexed(R"((?:^|; )(?:event|record) (\d+): ([^;]*))");
  for (std::sregex_iterator it(msg.begin(), msg.end(), kIndexed), end; it != end; ++it) {
    uint64_t index = 0;
    if (!absl::SimpleAtoi((*it)[1].str(), &index)) continue;
    v1::RecordError* err = ack->add_errors();
    err->set_index(index);
    std::string reason = (*it)[2];
    err->set_reason(reason);
    // Decoders write "[line L: ]<field path>: <reason>"; the engine's own
    // messages name a field in prose, so take the first one they mention.
    static const std::regex kFieldPath(R"(^(?:line \d+: )?([A-Za-z_][\w.\[\]]*): )");
    static const std::regex kField(
        R"(\b(source|collection|key|payload|position|timestamp|tick|op|id|name|entity|instance|document|value|before|after)\b)");
    std::smatch m;
    if (std::regex_search(reason, m, kFieldPath) || std::regex_search(reason, m, kField)) {
      err->set_field(m[1]);
    }
  }
}

}  // namespace cairn::wire
