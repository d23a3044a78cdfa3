// proto <-> engine conversion, both directions, shared by cairnd and the
// client library; and the one place an absl::Status becomes a grpc::Status
// (and back). The transport holds no business rules: handlers convert, call
// the engine once, convert back.
#ifndef CAIRN_PROTO_CONVERT_H_
#define CAIRN_PROTO_CONVERT_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cairn/backup.h"
#include "cairn/connector.h"
#include "cairn/event.h"
#include "cairn/options.h"
#include "cairn/source.h"
#include "cairn/stats.h"
#include "cairn/v1/cairn.pb.h"

namespace cairn::wire {

// Status messages on the wire are bounded (DESIGN §7: never an echo of a
// whole input) and valid UTF-8: gRPC status messages to kMaxStatusMessageBytes
// (they travel in a header), ack messages to kMaxAckMessageBytes.
inline constexpr size_t kMaxStatusMessageBytes = 1024;
inline constexpr size_t kMaxAckMessageBytes = 8192;
std::string WireMessage(std::string_view message, size_t max_bytes);
grpc::Status ToGrpc(const absl::Status& s);
// INVALID_ARGUMENT naming the first `string` field of `m` (a path such as
// "events[2].key") that is not valid UTF-8: protobuf would refuse to send or
// parse such a message without saying which field it was.
absl::Status CheckUtf8(const google::protobuf::Message& m);
// Why `bytes` does not parse as a message of type `d`: the path of the first
// `string` field holding invalid UTF-8 ("events[3].key is not valid UTF-8"),
// or that it is no protobuf message at all. Never quotes the bytes.
std::string WhyUnparsable(const google::protobuf::Descriptor* d, std::string_view bytes);
absl::Status FromGrpc(const grpc::Status& s);

v1::Position ToProto(Position p);
Position FromProto(const v1::Position& p);
void ToProto(const Entity& e, v1::Entity* out);
void ToProto(const Change& c, v1::Change* out);
void ToProto(const Version& v, v1::Version* out);
void ToProto(const IngestResult& r, v1::IngestAck* out);
void ToProto(const SourceDefinition& s, v1::Source* out);
SourceDefinition FromProto(const v1::Source& s);
// Unset optional fields take cairn/connector.h's defaults; INVALID_ARGUMENT
// for an on_error other than stop or skip (bounds are the engine's:
// connectors::Check).
void ToProto(const connectors::ConnectorDefinition& d, v1::Connector* out);
absl::StatusOr<connectors::ConnectorDefinition> FromProto(const v1::Connector& c);
void ToProto(const connectors::ConnectorStatus& s, v1::ConnectorReport* out);
connectors::ConnectorStatus FromProto(const v1::ConnectorReport& r);
// from_seq unset stays 0 here: cairnd puts its last seq there (`now`).
void ToProto(const connectors::SinkDefinition& d, v1::Sink* out);
absl::StatusOr<connectors::SinkDefinition> FromProto(const v1::Sink& s);
void ToProto(const connectors::SinkStatus& s, v1::SinkReport* out);
connectors::SinkStatus FromProto(const v1::SinkReport& r);
void ToProto(const connectors::DeadLetter& d, v1::DeadLetter* out);
connectors::DeadLetter FromProto(const v1::DeadLetter& d);
Entity FromProto(const v1::Entity& e);
Change FromProto(const v1::Change& c);
Version FromProto(const v1::Version& v);
IngestResult FromProto(const v1::IngestAck& ack);
void ToProto(const Event& e, v1::Event* out);

// INVALID_ARGUMENT naming `events[i].op` for an unknown op.
absl::StatusOr<std::vector<Event>> FromProto(
    const google::protobuf::RepeatedPtrField<v1::Event>& events);

// A batch's ack as a status: OK, or the code and message it failed with.
absl::Status AckStatus(const v1::IngestAck& ack);

// Sessions.
v1::SessionMode ToProto(SessionMode m);
// The engine checks the mode (an unknown number is INVALID_ARGUMENT there).
SessionMode FromProto(v1::SessionMode m);
void ToProto(const IngestResult& r, v1::CloseSessionResponse* out);
IngestResult FromProto(const v1::CloseSessionResponse& r);

// Queries.
v1::SnapshotRequest ToProto(const SnapshotOptions& o);
SnapshotOptions FromProto(const v1::SnapshotRequest& r);
v1::HistoryRequest ToProto(std::string_view collection, std::string_view key,
                           const HistoryOptions& o);
HistoryOptions FromProto(const v1::HistoryRequest& r);
// The filter and include_incomplete of a subscription; the start is the
// caller's (a checkpoint start is resolved against the store by cairnd).
void ToProto(const SubscribeFilter& filter, bool include_incomplete, v1::SubscribeRequest* out);
SubscribeOptions FromProto(const v1::SubscribeRequest& r);
// One item of a subscription (a change alone; more_changes are the caller's).
void ToProto(const SubscriptionItem& item, v1::SubscribeItem* out);
// False for an item of a kind this build does not know (skip it).
bool FromProto(const v1::SubscribeItem& in, SubscriptionItem* out);

// Admin.
void ToProto(const SourceStats& s, v1::SourceStats* out);
SourceStats FromProto(const v1::SourceStats& s);
// The store's part of a StatsResponse, holding at most `max_sources` sources
// (the rest are left out and `truncated` is set).
void ToProto(const StoreStats& s, int max_sources, v1::StatsResponse* out);
StoreStats FromProto(const v1::StatsResponse& r);
v1::Backup ToProto(const BackupInfo& b);
BackupInfo FromProto(const v1::Backup& b);
// Retention ages are bounded so that their seconds fit absl::Duration with
// room to spare: 0 (no age limit) to kMaxRetentionSeconds.
inline constexpr uint64_t kMaxRetentionSeconds = uint64_t{100} * 365 * 24 * 3600;
v1::Retention ToProto(const RetentionOptions& r);
// INVALID_ARGUMENT naming retention.max_age_seconds past the bound.
absl::StatusOr<RetentionOptions> FromProto(const v1::Retention& r);

// Fills an ack's code/message/errors from a failed batch. Engine messages
// start with "event <i>: " or list "record <i>: ..."; those indexes become
// RecordErrors so clients need not parse text.
void FailAck(const absl::Status& s, v1::IngestAck* ack);

}  // namespace cairn::wire

#endif  // CAIRN_PROTO_CONVERT_H_
