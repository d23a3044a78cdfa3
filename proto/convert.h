// proto <-> engine conversion, both directions, shared by cairnd and the
// client library; and the one place an absl::Status becomes a grpc::Status
// (and back). The transport holds no business rules: handlers convert, call
// the engine once, convert back.
#ifndef CAIRN_PROTO_CONVERT_H_
#define CAIRN_PROTO_CONVERT_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cairn/store.h"
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
Entity FromProto(const v1::Entity& e);
Change FromProto(const v1::Change& c);
Version FromProto(const v1::Version& v);
IngestResult FromProto(const v1::IngestAck& ack);
void ToProto(const Event& e, v1::Event* out);

// INVALID_ARGUMENT naming `events[i].op` for an unknown op.
absl::StatusOr<std::vector<Event>> FromProto(
    const google::protobuf::RepeatedPtrField<v1::Event>& events);

// Fills an ack's code/message/errors from a failed batch. Engine messages
// start with "event <i>: " or list "record <i>: ..."; those indexes become
// RecordErrors so clients need not parse text.
void FailAck(const absl::Status& s, v1::IngestAck* ack);

}  // namespace cairn::wire

#endif  // CAIRN_PROTO_CONVERT_H_
