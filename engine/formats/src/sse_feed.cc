// Aria-style Server-Sent Events (see SseDecoder in cairn/formats.h):
//
//   event: load | create | update | delete
//   data: {"entity": "account", "key": {"acct_no": 1001},
//          "timestamp": "2026-11-20T10:00:00.000Z" | <epoch ms>, "tick": 1}
//   data: {"acct_no": 1001, ...}          <- the body
//   <blank line>
//
// load -> upsert flagged snapshot, create -> upsert, update -> patch,
// delete -> delete (body ignored). Records are numbered by event from the
// start of the stream; errors also give the line the event started on.
#include <algorithm>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "common.h"

namespace cairn::formats {

struct SseDecoder::State {
  SourceDefinition source;
  DecodeOptions options;
  absl::Status error;
  std::string partial_line;  // a line not yet terminated
  bool skip_lf = false;      // the last chunk ended with CR; drop a leading LF
  size_t line_no = 0;
  size_t events = 0;                     // events dispatched (or attempted), the record index
  std::optional<uint64_t> retry_millis;  // the last valid `retry:` field
  // The event being assembled.
  size_t event_line = 0;  // its first line
  std::string type;
  std::string id;
  std::vector<std::string> data;
  std::string raw;

  void Reset() {
    event_line = 0;
    type.clear();
    id.clear();
    data.clear();
    raw.clear();
  }

  absl::Status Line(std::string_view line, std::vector<Event>* out);
  absl::Status Dispatch(std::vector<Event>* out);
  absl::Status Build(Event* e);
};

absl::Status SseDecoder::State::Line(std::string_view line, std::vector<Event>* out) {
  ++line_no;
  if (line.empty()) return Dispatch(out);
  if (line[0] == ':') return absl::OkStatus();  // comment
  if (event_line == 0) event_line = line_no;
  absl::StrAppend(&raw, AbslView(line), "\n");
  size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "event") {
    type = std::string(value);
  } else if (field == "data") {
    data.emplace_back(value);
  } else if (field == "id") {
    id = std::string(value);
  } else if (field == "retry") {
    // The reconnection time, kept by the decoder for its reader (a
    // connector); a value that is not all digits is ignored, as the SSE
    // spec says, and so are unknown fields.
    uint64_t ms = 0;
    if (!value.empty() && value.size() <= 12 &&
        std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        absl::SimpleAtoi(AbslView(value), &ms)) {
      retry_millis = ms;
    }
  }
  return absl::OkStatus();
}

absl::Status SseDecoder::State::Dispatch(std::vector<Event>* out) {
  if (data.empty()) {  // per the spec, an event without data is not fired
    Reset();
    return absl::OkStatus();
  }
  Event e;
  absl::Status s = Build(&e);
  size_t index = events++;
  size_t line = event_line;
  Reset();
  if (!s.ok()) return RecordError(index, line, s);
  out->push_back(std::move(e));
  return absl::OkStatus();
}

absl::Status SseDecoder::State::Build(Event* e) {
  if (type == "load" || type == "create") {
    e->op = Op::kUpsert;
    e->snapshot = type == "load";
  } else if (type == "update") {
    e->op = Op::kPatch;
  } else if (type == "delete") {
    e->op = Op::kDelete;
  } else {
    return FieldError("event", absl::StrCat("unknown event type '", type,
                                            "'; expected load, create, update or delete"));
  }
  if (data.size() != 2) {
    return FieldError("data",
                      absl::StrCat("expected 2 data lines (header, body), got ", data.size()));
  }
  auto header = ParseObject(data[0]);
  if (!header.ok()) return FieldError("header", header.status().message());
  Context ctx{source, options};
  const Value* entity = Member(*header, "entity");
  if (entity && !IsText(*entity)) return FieldError("header.entity", "must be a string");
  CAIRN_ASSIGN_OR_RETURN(e->collection,
                         ResolveCollection(ctx, entity ? Text(*entity) : "", "header.entity"));
  const Value* key = Member(*header, "key");
  if (key == nullptr) return FieldError("header.key", "missing");
  CAIRN_ASSIGN_OR_RETURN(e->key, KeyFromMessageKey(*key, "header.key"));
  const Value* ts = Member(*header, "timestamp");
  if (ts == nullptr) return FieldError("header.timestamp", "missing");
  CAIRN_ASSIGN_OR_RETURN(e->position.timestamp,
                         ReadTimestamp(*ts, EpochUnit::kMillis, "header.timestamp"));
  const Value* tick = Member(*header, "tick");
  if (tick == nullptr) return FieldError("header.tick", "missing");
  CAIRN_ASSIGN_OR_RETURN(e->position.tick, ReadU64(*tick, "header.tick"));
  if (e->op != Op::kDelete) {
    auto body = ParseObject(data[1]);
    if (!body.ok()) return FieldError("body", body.status().message());
    e->payload = json::Serialize(*body);
  }
  e->source = source.name;
  e->event_id = id;
  e->raw = raw;
  return absl::OkStatus();
}

SseDecoder::SseDecoder(SourceDefinition source, DecodeOptions options)
    : state_(std::make_unique<State>()) {
  state_->source = std::move(source);
  state_->options = std::move(options);
}

SseDecoder::~SseDecoder() = default;

absl::Status SseDecoder::Feed(std::string_view chunk, std::vector<Event>* out) {
  State& st = *state_;
  if (!st.error.ok()) return st.error;
  size_t i = 0;
  if (st.skip_lf && !chunk.empty()) {
    if (chunk[0] == '\n') i = 1;
    st.skip_lf = false;
  }
  while (i < chunk.size()) {
    size_t end = chunk.find_first_of("\r\n", i);
    if (end == std::string_view::npos) {
      st.partial_line.append(chunk.substr(i));
      break;
    }
    std::string_view piece = chunk.substr(i, end - i);
    absl::Status s;
    if (st.partial_line.empty()) {
      s = st.Line(piece, out);
    } else {
      st.partial_line.append(piece);
      std::string line = std::move(st.partial_line);
      st.partial_line.clear();
      s = st.Line(line, out);
    }
    if (!s.ok()) return st.error = s;
    i = end + 1;
    if (chunk[end] == '\r') {
      if (i < chunk.size()) {
        if (chunk[i] == '\n') ++i;
      } else {
        st.skip_lf = true;
      }
    }
  }
  return absl::OkStatus();
}

std::optional<uint64_t> SseDecoder::retry_millis() const { return state_->retry_millis; }

absl::Status SseDecoder::Finish(std::vector<Event>* out) {
  State& st = *state_;
  if (!st.error.ok()) return st.error;
  if (!st.partial_line.empty()) {
    std::string line = std::move(st.partial_line);
    st.partial_line.clear();
    if (absl::Status s = st.Line(line, out); !s.ok()) return st.error = s;
  }
  if (absl::Status s = st.Dispatch(out); !s.ok()) return st.error = s;
  return absl::OkStatus();
}

}  // namespace cairn::formats
