// proto <-> engine conversion and the one place an absl::Status becomes a
// grpc::Status. The transport holds no business rules: handlers convert,
// call the engine once, convert back.
#ifndef CAIRN_SERVER_CONVERT_H_
#define CAIRN_SERVER_CONVERT_H_

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "cairn/store.h"
#include "cairn/v1/cairn.pb.h"

namespace cairn::server {

grpc::Status ToGrpc(const absl::Status& s);

v1::Position ToProto(Position p);
Position FromProto(const v1::Position& p);
void ToProto(const Entity& e, v1::Entity* out);
void ToProto(const Change& c, v1::Change* out);
void ToProto(const Version& v, v1::Version* out);
void ToProto(const IngestResult& r, v1::IngestAck* out);
void ToProto(const SourceDefinition& s, v1::Source* out);
SourceDefinition FromProto(const v1::Source& s);

// INVALID_ARGUMENT naming `events[i].op` for an unknown op.
absl::StatusOr<std::vector<Event>> FromProto(
    const google::protobuf::RepeatedPtrField<v1::Event>& events);

// Fills an ack's code/message/errors from a failed batch. Engine messages
// start with "event <i>: " or list "record <i>: ..."; those indexes become
// RecordErrors so clients need not parse text.
void FailAck(const absl::Status& s, v1::IngestAck* ack);

}  // namespace cairn::server

#endif  // CAIRN_SERVER_CONVERT_H_
