// cairn: command-line client for cairnd. Output is JSON lines on stdout;
// progress and summaries go to stderr. Exit status: 0 ok, 1 a call failed,
// 2 bad usage, 3 some ingest batches were rejected.
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cairn/client.h"
#include "cairn/status.h"
#include "cairn/version.h"
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
  Line& Strs(const char* k, const std::vector<std::string>& v) {
    w_.Key(k);
    w_.StartArray();
    for (const auto& s : v) w_.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
    w_.EndArray();
    return *this;
  }
  // A map of strings to strings (or, with `lists`, to string lists).
  Line& Map(const char* k, const std::map<std::string, std::string>& m) {
    w_.Key(k);
    w_.StartObject();
    for (const auto& [a, b] : m) {
      w_.Key(a.data(), static_cast<rapidjson::SizeType>(a.size()));
      w_.String(b.data(), static_cast<rapidjson::SizeType>(b.size()));
    }
    w_.EndObject();
    return *this;
  }
  Line& Lists(const char* k, const std::map<std::string, std::vector<std::string>>& m) {
    w_.Key(k);
    w_.StartObject();
    for (const auto& [a, b] : m) {
      w_.Key(a.data(), static_cast<rapidjson::SizeType>(a.size()));
      w_.StartArray();
      for (const auto& s : b) w_.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
      w_.EndArray();
    }
    w_.EndObject();
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

// A sink's state, checkpoint and lag (cairn sink status, cairn stats).
void SinkFields(const cairn::connectors::SinkStatus& s, Line* l) {
  l->Str("sink", s.name)
      .Str("state", s.state)
      .U64("checkpoint_seq", s.checkpoint_seq)
      .U64("lag_seqs", s.lag_seqs)
      .U64("lag_ms", static_cast<uint64_t>(s.lag_seconds * 1000));
}

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

void PrintSource(const cairn::SourceDefinition& d, bool schemas) {
  Line l;
  l.Str("name", d.name)
      .Str("format", d.format)
      .Str("default_collection", d.default_collection)
      .Lists("key_fields", d.key_fields)
      .Map("collection_map", d.collection_map);
  if (schemas) l.Map("json_schemas", d.json_schemas);
  l.Print();
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
    return absl::InvalidArgumentError("--as-of-time: expected RFC 3339 or microseconds: " + err);
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

// One payload cut from an input, and where it came from.
struct Chunk {
  std::string payload;
  uint64_t first_line = 0;  // 1-based lines of the input it holds
  uint64_t last_line = 0;
  uint64_t first_record = 0;  // 0-based record index of the input
};

// Cuts a byte stream into payloads the source's format can decode alone:
// JSON-lines formats at line ends, SSE at the blank line ending an event,
// whole documents (datapoints, bitbroker, or any format with --atomic) only
// at the end of the input. A batch ends after `per_batch` records or once it
// holds `max_bytes` (a record larger than that goes alone). Fed in chunks of
// any size, so a live feed on stdin is sent as it arrives.
class Batcher {
 public:
  Batcher(bool whole, bool sse, size_t per_batch, size_t max_bytes)
      : whole_(whole), sse_(sse), per_batch_(per_batch), max_bytes_(max_bytes) {}

  // Appends `chunk`; moves every full batch to *out.
  void Add(std::string_view chunk, std::vector<Chunk>* out) {
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
      bool ends_record = sse_ ? blank : !blank;
      if (ends_record && records_ > 0 && end + 1 > max_bytes_) {
        // This record would take the batch past max_bytes: the records
        // before it go first (a record larger than max_bytes goes alone).
        size_t shift = complete_;
        Cut(out);
        end -= shift;
      }
      ++lines_;
      if (ends_record) ++records_;
      line_start_ = scanned_ = end + 1;
      if (ends_record) {
        complete_ = line_start_;
        complete_lines_ = lines_;
      }
      if (records_ >= per_batch_ || (records_ > 0 && complete_ >= max_bytes_)) Cut(out);
    }
  }

  // Bytes held that do not yet end a record (a line without its end).
  size_t open_bytes() const { return buffer_.size() - complete_; }
  // The 1-based line the bytes not yet cut start on.
  uint64_t next_line() const { return first_line_; }

  // Moves the complete records not yet sent (a partial batch) to *out.
  void Flush(std::vector<Chunk>* out) {
    if (records_ > 0) Cut(out);
  }

  // End of input: everything left, including a last record without its end.
  void Finish(std::vector<Chunk>* out) {
    if (buffer_.find_first_not_of(" \t\r\n") != std::string::npos) {
      uint64_t lines = std::count(buffer_.begin(), buffer_.end(), '\n');
      if (!buffer_.empty() && buffer_.back() != '\n') ++lines;
      out->push_back(
          {buffer_, first_line_, first_line_ + std::max<uint64_t>(lines, 1) - 1, first_record_});
    }
    buffer_.clear();
    line_start_ = scanned_ = complete_ = records_ = 0;
  }

 private:
  void Cut(std::vector<Chunk>* out) {
    out->push_back({buffer_.substr(0, complete_), first_line_, first_line_ + complete_lines_ - 1,
                    first_record_});
    buffer_.erase(0, complete_);
    line_start_ -= complete_;
    scanned_ -= complete_;
    first_line_ += complete_lines_;
    first_record_ += records_;
    lines_ -= complete_lines_;
    complete_ = complete_lines_ = records_ = 0;
  }

  const bool whole_, sse_;
  const size_t per_batch_, max_bytes_;
  std::string buffer_;
  size_t line_start_ = 0;        // start of the line being scanned
  size_t scanned_ = 0;           // bytes searched for '\n' so far
  size_t complete_ = 0;          // end of the last complete record
  uint64_t lines_ = 0;           // lines ended in buffer_
  uint64_t complete_lines_ = 0;  // lines in buffer_[0, complete_)
  size_t records_ = 0;           // complete records in buffer_[0, complete_)
  uint64_t first_line_ = 1;      // the line buffer_ starts on
  uint64_t first_record_ = 0;    // the record buffer_ starts with
};

// A decoder's error names the record and line within its batch ("record 276:
// line 277: ..."): the file's own numbers are what a user can act on.
std::string InFileTerms(const Chunk& c, std::string_view message) {
  std::string m(message);
  uint64_t record = 0, line = 0;
  size_t colon = m.find(": line ");
  if (m.rfind("record ", 0) == 0 && colon != std::string::npos &&
      absl::SimpleAtoi(m.substr(7, colon - 7), &record)) {
    size_t num = colon + 7;
    size_t end = m.find(':', num);
    if (end != std::string::npos && absl::SimpleAtoi(m.substr(num, end - num), &line)) {
      return absl::StrCat("line ", c.first_line + line - 1, " (record ", c.first_record + record,
                          "):", m.substr(end + 1));
    }
  }
  return absl::StrCat("lines ", c.first_line, "-", c.last_line, ": ", m);
}

// Line ranges "1-500, 1001-1200" of the chunks in `done`.
std::string Ranges(std::vector<std::pair<uint64_t, uint64_t>> spans) {
  std::sort(spans.begin(), spans.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (auto s : spans) {
    if (!merged.empty() && s.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, s.second);
    } else {
      merged.push_back(s);
    }
  }
  std::string out;
  for (auto [a, b] : merged) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", a, a == b ? "" : absl::StrCat("-", b));
  }
  return out.empty() ? "none" : out;
}

// Largest line the CLI holds while waiting for its end: past it the input
// is taken not to be in the source's format.
constexpr size_t kMaxOpenRecordBytes = 64 << 20;
absl::Status CheckOpenRecord(const Batcher& b) {
  if (b.open_bytes() <= kMaxOpenRecordBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("line ", b.next_line(), " and after: more than ", kMaxOpenRecordBytes,
                   " bytes without a record's end (is this file in the source's format?)"));
}

struct IngestTotals {
  uint64_t batches = 0, applied = 0, duplicates = 0, conflicts = 0, rejected = 0;
};

struct IngestOptions {
  std::string source;
  std::vector<std::string> files;
  size_t per_batch = 500;
  size_t max_batch_bytes = 4 << 20;
  bool durable = false;
  bool keep_going = false;  // --continue
  bool atomic = false;
  absl::Duration reconnect_window = absl::Seconds(60);
};

// Whole documents (datapoints, bitbroker) are cut only at the end of the
// input; the rest at record ends.
Batcher BatcherFor(const std::string& format, const IngestOptions& o) {
  return Batcher(format == "datapoints" || format == "bitbroker", format == "sse-feed", o.per_batch,
                 o.max_batch_bytes);
}

// Ingests one input through the source, pipelining up to kWindow batches.
// What happened to each line is kept so a stop at any point says which
// lines were acknowledged. A stream the server drops (UNAVAILABLE: a restart)
// is reopened and every unacknowledged batch sent again: ingest is
// idempotent, so a batch that was committed but not acked comes back as
// duplicates. Returns the error that stopped it, if any; *stopped is set
// when a rejected batch stopped it (not --continue).
class FileIngest {
 public:
  FileIngest(Client& client, const IngestOptions& o, const std::string& format,
             const std::string& file, IngestTotals* totals)
      : client_(client), o_(o), file_(file), totals_(totals), batcher_(BatcherFor(format, o)) {}

  absl::Status Run(bool* stopped);
  void PrintSummary() const;

 private:
  static constexpr size_t kWindow = 8;  // batches in flight

  absl::Status Open() {
    CAIRN_ASSIGN_OR_RETURN(stream_, client_.OpenIngestStream(/*payloads=*/true));
    return absl::OkStatus();
  }
  absl::Status Send(std::vector<Chunk>& batches);
  absl::Status ReceiveOne();
  // The stream ended with `s` while batches were in flight.
  absl::Status Recover(absl::Status s);
  void Progress() const;

  Client& client_;
  const IngestOptions& o_;
  const std::string& file_;
  IngestTotals* totals_;
  Batcher batcher_;
  std::unique_ptr<cairn::client::IngestStream> stream_;
  std::deque<Chunk> pending_;  // sent, not yet acknowledged, in order
  std::vector<std::pair<uint64_t, uint64_t>> acked_, rejected_;
  bool stop_ = false;   // a batch was rejected: send nothing more
  absl::Status fatal_;  // what ends the run once the acks in flight are in
  uint64_t read_bytes_ = 0, size_ = 0;
  bool tty_ = isatty(STDERR_FILENO);
};

absl::Status FileIngest::Send(std::vector<Chunk>& batches) {
  for (Chunk& b : batches) {
    if (stop_) break;
    while (pending_.size() >= kWindow) CAIRN_RETURN_IF_ERROR(ReceiveOne());
    if (stop_) break;
    pending_.push_back(b);
    absl::Status s = stream_->SendPayload(o_.source, std::move(b.payload), o_.durable);
    if (!s.ok()) CAIRN_RETURN_IF_ERROR(Recover(s));
  }
  batches.clear();
  return absl::OkStatus();
}

absl::Status FileIngest::ReceiveOne() {
  std::vector<cairn::client::RecordError> errors;
  auto r = stream_->Receive(&errors);
  if (cairn::client::StreamEnded(r.status())) {
    // The stream itself ended, not one batch (a full disk is one batch's
    // RESOURCE_EXHAUSTED: the else branch below reports it).
    return Recover(r.status());
  }
  Chunk c = std::move(pending_.front());
  pending_.pop_front();
  ++totals_->batches;
  if (r.ok()) {
    totals_->applied += r->applied;
    totals_->duplicates += r->duplicates;
    totals_->conflicts += r->conflicts;
    acked_.emplace_back(c.first_line, c.last_line);
  } else if (absl::IsInvalidArgument(r.status()) || absl::IsNotFound(r.status()) ||
             absl::IsOutOfRange(r.status()) || absl::IsPermissionDenied(r.status()) ||
             absl::IsFailedPrecondition(r.status()) || absl::IsUnauthenticated(r.status())) {
    ++totals_->rejected;
    rejected_.emplace_back(c.first_line, c.last_line);
    std::cerr << (tty_ ? "\r" : "") << file_ << ": batch of lines " << c.first_line << "-"
              << c.last_line
              << " rejected: " << InFileTerms(c, cairn::StdView(r.status().message())) << "\n";
    if (!o_.keep_going) stop_ = true;
  } else {
    pending_.push_front(std::move(c));
    return r.status();
  }
  Progress();
  return absl::OkStatus();
}

absl::Status FileIngest::Recover(absl::Status s) {
  if (absl::IsResourceExhausted(s) && !pending_.empty() && fatal_.ok()) {
    // A message the server would not take ended the stream: name the
    // largest batch in flight, send nothing from it on, and get the acks of
    // the batches before it on a new stream, so the summary is exact.
    auto big = std::max_element(
        pending_.begin(), pending_.end(),
        [](const Chunk& a, const Chunk& b) { return a.payload.size() < b.payload.size(); });
    fatal_ = absl::ResourceExhaustedError(
        absl::StrCat("lines ", big->first_line, "-", big->last_line, " make a batch of ",
                     big->payload.size(), " bytes, more than cairnd accepts (", s.message(),
                     "): raise cairnd's --max-message-bytes", ", or lower --max-batch-bytes",
                     " (a single record larger than the server's limit cannot be sent)"));
    pending_.erase(big, pending_.end());
    stop_ = true;
    s = absl::UnavailableError("resending the batches before it");
  }
  if (!absl::IsUnavailable(s) && !absl::IsCancelled(s)) return s;
  // The server went away (a restart): reopen and send again what has no ack.
  absl::Time deadline = absl::Now() + o_.reconnect_window;
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    std::cerr << (tty_ ? "\r" : "") << file_ << ": " << s.message() << "; reconnecting\n";
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
    if (absl::Status h = client_.Health(); h.ok()) {
      CAIRN_RETURN_IF_ERROR(Open());
      bool sent = true;
      for (const Chunk& c : pending_) {
        if (!stream_->SendPayload(o_.source, c.payload, o_.durable).ok()) {
          sent = false;
          break;
        }
      }
      if (sent) return absl::OkStatus();
    }
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat("cairnd did not come back within ",
                                                 absl::FormatDuration(o_.reconnect_window), ": ",
                                                 s.message()));
    }
  }
}

void FileIngest::Progress() const {
  if (!tty_) return;
  std::cerr << "\r" << file_;
  if (size_ > 0) {
    size_t pct = std::min<uint64_t>(100, read_bytes_ * 100 / size_);
    std::string bar(pct / 5, '#');
    std::cerr << " [" << bar << std::string(20 - bar.size(), ' ') << "] " << pct << "%";
  }
  std::cerr << " " << totals_->applied << " applied, " << totals_->duplicates << " duplicate"
            << std::flush;
}

absl::Status FileIngest::Run(bool* stopped) {
  bool is_stdin = file_ == "-";
  int fd = is_stdin ? STDIN_FILENO : open(file_.c_str(), O_RDONLY);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat("cannot read ", file_, ": ", strerror(errno)));
  struct stat st {};
  bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  size_ = regular ? st.st_size : 0;
  absl::Status result = [&]() -> absl::Status {
    CAIRN_RETURN_IF_ERROR(Open());
    std::vector<Chunk> batches;
    std::string chunk(1 << 16, '\0');
    while (!stop_) {
      // A pipe that goes quiet (a live feed) gets its partial batch sent and
      // its acks read, so nothing waits for the next burst.
      if (!regular) {
        pollfd p{.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) == 0) {
          batcher_.Flush(&batches);
          CAIRN_RETURN_IF_ERROR(Send(batches));
          while (!pending_.empty()) CAIRN_RETURN_IF_ERROR(ReceiveOne());
          continue;
        }
      }
      ssize_t n = read(fd, chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::InternalError(absl::StrCat("read ", file_, ": ", strerror(errno)));
      if (n == 0) break;
      read_bytes_ += n;
      batcher_.Add(std::string_view(chunk.data(), n), &batches);
      CAIRN_RETURN_IF_ERROR(CheckOpenRecord(batcher_));
      CAIRN_RETURN_IF_ERROR(Send(batches));
    }
    if (!stop_) {
      batcher_.Finish(&batches);
      CAIRN_RETURN_IF_ERROR(Send(batches));
    }
    while (!pending_.empty()) CAIRN_RETURN_IF_ERROR(ReceiveOne());
    CAIRN_RETURN_IF_ERROR(fatal_);
    return stream_->Close();
  }();
  if (!is_stdin) close(fd);
  if (tty_) std::cerr << "\n";
  *stopped = stop_ && fatal_.ok();
  return result;
}

void FileIngest::PrintSummary() const {
  uint64_t last_acked = 0;
  for (auto [a, b] : acked_) last_acked = std::max(last_acked, b);
  std::cerr << file_ << ": lines acknowledged: " << Ranges(acked_);
  if (!rejected_.empty()) std::cerr << "; rejected: " << Ranges(rejected_);
  if (!pending_.empty()) {
    std::cerr << "; sent without an ack (may or may not be stored): "
              << Ranges({{pending_.front().first_line, pending_.back().last_line}});
  }
  std::cerr << "\n";
  if (stop_ || !pending_.empty()) {
    // Everything before the first line without an ack is stored; ingest is
    // idempotent, so re-sending from there (or the whole file) is safe.
    uint64_t resume = 1;
    for (auto [a, b] : acked_) {
      if (a == resume) resume = b + 1;
    }
    std::cerr << file_ << ": to resume, fix what was rejected and ingest again from line " << resume
              << " (or the whole file: what is stored comes back as duplicates)\n";
  }
}

// --atomic: one input through one atomic session. Its batches are staged
// on cairnd (nothing visible), then one commit applies all of them or, if a
// batch is rejected or the run is cut short, none: the session is
// discarded. Posting a batch again after cairnd restarts is harmless (a
// repeat is a duplicate at commit), so UNAVAILABLE is retried like the
// streaming path does. Sets *rejected when a batch was rejected.
class AtomicFileIngest {
 public:
  AtomicFileIngest(Client& client, const IngestOptions& o, const std::string& format,
                   const std::string& file, IngestTotals* totals)
      : client_(client), o_(o), file_(file), totals_(totals), batcher_(BatcherFor(format, o)) {}

  absl::Status Run(bool* rejected);

 private:
  // `call` until it is not UNAVAILABLE or the reconnect window has passed.
  template <typename T>
  absl::StatusOr<T> Reconnecting(const std::function<absl::StatusOr<T>()>& call) {
    absl::Time deadline = absl::Now() + o_.reconnect_window;
    absl::Duration backoff = absl::Milliseconds(100);
    while (true) {
      absl::StatusOr<T> r = call();
      if (!absl::IsUnavailable(r.status()) || absl::Now() > deadline) return r;
      std::cerr << file_ << ": " << r.status().message() << "; reconnecting\n";
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(2));
    }
  }
  absl::Status Post(Chunk& c, bool* rejected);
  // Discards the session after a failure; says so if it cannot.
  void Discard();

  Client& client_;
  const IngestOptions& o_;
  const std::string& file_;
  IngestTotals* totals_;
  Batcher batcher_;
  std::string session_;
  uint64_t staged_lines_ = 0;
  bool tty_ = isatty(STDERR_FILENO);
};

absl::Status AtomicFileIngest::Post(Chunk& c, bool* rejected) {
  auto r =
      Reconnecting<uint64_t>([&] { return client_.SessionIngestPayload(session_, c.payload); });
  ++totals_->batches;
  if (r.ok()) {
    staged_lines_ = c.last_line;
    if (tty_) std::cerr << "\r" << file_ << ": staged lines 1-" << staged_lines_ << std::flush;
    return absl::OkStatus();
  }
  if (absl::IsInvalidArgument(r.status()) || absl::IsFailedPrecondition(r.status()) ||
      absl::IsPermissionDenied(r.status()) || absl::IsOutOfRange(r.status())) {
    ++totals_->rejected;
    *rejected = true;
    std::cerr << (tty_ ? "\r" : "") << file_ << ": batch of lines " << c.first_line << "-"
              << c.last_line
              << " rejected: " << InFileTerms(c, cairn::StdView(r.status().message())) << "\n";
    return absl::OkStatus();
  }
  if (absl::IsResourceExhausted(r.status()) &&
      absl::StrContains(r.status().message(), "larger than max")) {
    // gRPC's own limit (a full disk is RESOURCE_EXHAUSTED too, and says so).
    return absl::ResourceExhaustedError(
        absl::StrCat("lines ", c.first_line, "-", c.last_line, " make a batch of ",
                     c.payload.size(), " bytes, more than cairnd accepts (", r.status().message(),
                     "): raise cairnd's --max-message-bytes, or lower --max-batch-bytes"));
  }
  return r.status();
}

void AtomicFileIngest::Discard() {
  if (session_.empty()) return;
  auto r = Reconnecting<cairn::IngestResult>([&] { return client_.CloseSession(session_, false); });
  if (!r.ok() && !absl::IsFailedPrecondition(r.status())) {
    std::cerr << file_ << ": could not discard session " << session_ << " (" << r.status()
              << "); discard it with: cairn session close --discard " << session_ << "\n";
  }
}

absl::Status AtomicFileIngest::Run(bool* rejected) {
  *rejected = false;
  bool is_stdin = file_ == "-";
  int fd = is_stdin ? STDIN_FILENO : open(file_.c_str(), O_RDONLY);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat("cannot read ", file_, ": ", strerror(errno)));
  auto opened = Reconnecting<std::string>(
      [&] { return client_.OpenSession(o_.source, "", cairn::SessionMode::kAtomic); });
  if (!opened.ok()) {
    if (!is_stdin) close(fd);
    return opened.status();
  }
  session_ = *opened;
  absl::Status result = [&]() -> absl::Status {
    std::vector<Chunk> batches;
    std::string chunk(1 << 16, '\0');
    auto post_all = [&]() -> absl::Status {
      for (Chunk& c : batches) {
        CAIRN_RETURN_IF_ERROR(Post(c, rejected));
        if (*rejected) break;
      }
      batches.clear();
      return absl::OkStatus();
    };
    while (!*rejected) {
      ssize_t n = read(fd, chunk.data(), chunk.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::InternalError(absl::StrCat("read ", file_, ": ", strerror(errno)));
      if (n == 0) break;
      batcher_.Add(std::string_view(chunk.data(), n), &batches);
      CAIRN_RETURN_IF_ERROR(CheckOpenRecord(batcher_));
      CAIRN_RETURN_IF_ERROR(post_all());
    }
    if (!*rejected) {
      batcher_.Finish(&batches);
      CAIRN_RETURN_IF_ERROR(post_all());
    }
    return absl::OkStatus();
  }();
  if (!is_stdin) close(fd);
  if (tty_) std::cerr << "\n";
  if (!result.ok() || *rejected) {
    Discard();
    std::cerr << file_ << ": nothing of it was applied (--atomic)\n";
    return result;
  }
  bool retried = false;
  auto committed = Reconnecting<cairn::IngestResult>([&]() -> absl::StatusOr<cairn::IngestResult> {
    auto r = client_.CloseSession(session_, true);
    retried |= absl::IsUnavailable(r.status());
    return r;
  });
  if (!committed.ok() && retried && absl::IsFailedPrecondition(committed.status()) &&
      absl::StrContains(committed.status().message(), "committed")) {
    // The commit went through; its answer was lost with the connection.
    std::cerr << file_ << ": all " << staged_lines_
              << " lines applied atomically (the commit's counts were lost with the connection)\n";
    return absl::OkStatus();
  }
  if (!committed.ok()) {
    Discard();
    std::cerr << file_ << ": nothing of it was applied (--atomic)\n";
    return committed.status();
  }
  totals_->applied += committed->applied;
  totals_->duplicates += committed->duplicates;
  totals_->conflicts += committed->conflicts;
  std::cerr << file_ << ": all " << staged_lines_ << " lines applied atomically";
  if (committed->first_seq) {
    std::cerr << " (seq " << committed->first_seq << "-" << committed->last_seq << ")";
  }
  std::cerr << "\n";
  return absl::OkStatus();
}

int Ingest(Client& client, const IngestOptions& o) {
  auto def = client.GetSource(o.source);
  if (!def.ok()) return Fail(def.status());
  std::vector<std::string> inputs = o.files.empty() ? std::vector<std::string>{"-"} : o.files;
  // Every input is checked before anything is sent.
  for (const std::string& file : inputs) {
    if (file == "-") continue;
    struct stat st {};
    if (stat(file.c_str(), &st) != 0) {
      std::cerr << "error: cannot read " << file << ": " << strerror(errno) << "\n";
      return 2;
    }
    if (S_ISDIR(st.st_mode)) {
      std::cerr << "error: " << file << " is a directory; name the files in it\n";
      return 2;
    }
  }
  IngestTotals t;
  int rc = 0;
  for (const std::string& file : inputs) {
    if (o.atomic) {
      AtomicFileIngest f(client, o, def->format, file, &t);
      bool rejected = false;
      absl::Status s = f.Run(&rejected);
      if (!s.ok()) {
        std::cerr << "error: " << file << ": " << s << "\n";
        rc = 1;
        break;
      }
      if (rejected && !o.keep_going) {
        std::cerr << "stopped at the first rejected file (--continue goes on to the next)\n";
        break;
      }
      continue;
    }
    FileIngest f(client, o, def->format, file, &t);
    bool stopped = false;
    absl::Status s = f.Run(&stopped);
    if (!s.ok() || stopped || t.rejected) f.PrintSummary();
    if (!s.ok()) {
      std::cerr << "error: " << file << ": " << s << "\n";
      rc = 1;
      break;
    }
    if (stopped) {
      std::cerr << "stopped at the first rejected batch (--continue goes on past it)\n";
      break;
    }
  }
  std::cerr << "batches " << t.batches << ": accepted " << t.applied << ", duplicate "
            << t.duplicates << ", conflict " << t.conflicts << ", rejected batches " << t.rejected
            << "\n";
  if (rc) return rc;
  return t.rejected ? 3 : 0;
}

// A whole number in [lo, hi], said in words when it is not ("-1" would
// otherwise wrap to 2^64-1 in an unsigned option).
CLI::Validator Unsigned(uint64_t lo, uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        uint64_t v = 0;
        bool digits = !s.empty() &&
                      std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!digits || !absl::SimpleAtoi(s, &v) || v < lo || v > hi) {
          return absl::StrCat("expected a whole number from ", lo, " to ", hi, ", got '", s, "'");
        }
        return "";
      },
      absl::StrCat("UINT:", lo, "..", hi));
}

// "COLL=a,b" pairs.
absl::Status ParsePairs(const std::vector<std::string>& in, const char* flag,
                        std::map<std::string, std::string>* out) {
  for (const auto& s : in) {
    std::pair<std::string, std::string> kv = absl::StrSplit(s, absl::MaxSplits('=', 1));
    if (kv.first.empty() || kv.second.empty()) {
      return absl::InvalidArgumentError(std::string(flag) + " expects NAME=VALUE, got '" + s + "'");
    }
    (*out)[kv.first] = kv.second;
  }
  return absl::OkStatus();
}

// One backup as a JSON line (cairn backup create; cairn-backup prints the
// same fields).
void PrintBackup(const cairn::BackupInfo& b) {
  Line l;
  l.U64("id", b.id)
      .U64("seq", b.seq)
      .Str("created", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", b.created, absl::UTCTimeZone()))
      .U64("size_bytes", b.size_bytes)
      .U64("files", b.files);
  if (b.copied_bytes != 0) l.U64("copied_bytes", b.copied_bytes);
  if (b.format_version != 0) l.U64("format_version", b.format_version);
  if (!b.cairn_version.empty()) l.Str("cairn_version", b.cairn_version);
  l.Print();
}

// cairn backup list|verify|prune|restore: runs cairn-backup, found beside
// this binary (installed) or in the build tree's server/, else on PATH.
int RunBackupTool(const char* self, const std::string& command, std::vector<std::string> args) {
  std::string dir = "/proc/self/exe";
  char buf[4096];
  ssize_t n = readlink(dir.c_str(), buf, sizeof(buf) - 1);
  dir = n > 0 ? std::string(buf, n) : std::string(self);
  dir = dir.substr(0, dir.find_last_of('/') + 1);
  args.insert(args.begin(), command);
  args.insert(args.begin(), "cairn-backup");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (const std::string& path : {dir + "cairn-backup", dir + "../server/cairn-backup"}) {
    if (access(path.c_str(), X_OK) == 0) execv(path.c_str(), argv.data());
  }
  execvp("cairn-backup", argv.data());
  std::cerr << "error: cairn backup " << command
            << ": cairn-backup (installed with cairnd) was not found beside cairn or on PATH\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"cairn: client for the cairnd event-sourced state store"};
  app.set_version_flag("--version", std::string("cairn ") + cairn::kVersion);
  app.require_subcommand(1);
  cairn::client::ClientOptions options;
  app.add_option("--server", options.target, "cairnd address")
      ->capture_default_str()
      ->envname("CAIRN_SERVER");
  app.add_option("--token", options.token, "bearer token")->envname("CAIRN_TOKEN");
  app.add_option("--tls-ca", options.tls_ca_file, "PEM roots (enables TLS)");
  app.add_option("--tls-cert", options.tls_cert_file, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", options.tls_key_file, "PEM client key (mutual TLS)");

  // ingest
  auto* ingest = app.add_subcommand(
      "ingest",
      "ingest files (or stdin) through a registered source. By default the first rejected "
      "batch stops the run, and the lines acknowledged so far are printed (re-running after "
      "a fix is safe: what is stored comes back as duplicates)");
  IngestOptions io;
  ingest->add_option("--source", io.source, "registered source (decides the format)")->required();
  ingest->add_option("--batch", io.per_batch, "records per batch")
      ->capture_default_str()
      ->check(Unsigned(1, 100000));
  ingest
      ->add_option("--max-batch-bytes", io.max_batch_bytes,
                   "bytes per batch at most (a larger record goes alone); keep it under "
                   "cairnd's --max-message-bytes")
      ->capture_default_str()
      ->check(Unsigned(1, 1 << 30));
  ingest->add_flag("--durable", io.durable, "ack only after fsync");
  ingest->add_flag("--continue", io.keep_going,
                   "go on past rejected batches (each is reported with its file lines)");
  ingest->add_flag("--atomic", io.atomic,
                   "all or nothing per file, of any size: its batches are staged in an atomic "
                   "session and applied by one commit (a rejected batch applies nothing of "
                   "the file)");
  ingest->add_option("files", io.files, "input files ('-' or none: stdin)");

  // get
  auto* get = app.add_subcommand("get", "current state of one entity");
  std::string collection, key;
  get->add_option("collection", collection, "the entity's collection")->required();
  get->add_option("key", key, "JSON key text, e.g. 101 or '\"ACC-1\"'")->required();

  // snapshot
  auto* snapshot = app.add_subcommand("snapshot", "all entities (JSON lines), now or at a point");
  std::string prefix, as_of_time;
  uint64_t as_of_seq = 0, as_of_tick = 0;
  bool exclude_incomplete = false;
  auto* snap_collection = snapshot->add_option("--collection", collection,
                                               "only this collection (default: every collection)");
  snapshot->add_option("--prefix", prefix, "string keys starting with this (needs --collection)")
      ->needs(snap_collection);
  auto* seq_opt = snapshot->add_option("--as-of-seq", as_of_seq, "state after commit N")
                      ->check(Unsigned(0, UINT64_MAX - 1));
  auto* time_opt =
      snapshot->add_option("--as-of-time", as_of_time, "event time: RFC 3339 or µs since epoch");
  snapshot->add_option("--as-of-tick", as_of_tick, "tick at --as-of-time (default: the last)")
      ->check(Unsigned(0, UINT64_MAX - 1))
      ->needs(time_opt);
  seq_opt->excludes(time_opt);
  snapshot->add_flag("--exclude-incomplete", exclude_incomplete,
                     "leave out entities whose fold holds only patches (no full upsert yet)");

  // history
  auto* history = app.add_subcommand("history", "versions of one entity with before/after");
  bool reverse = false;
  size_t limit = 0;
  history->add_option("collection", collection, "the entity's collection")->required();
  history->add_option("key", key, "JSON key text")->required();
  history->add_flag("--reverse", reverse, "newest first");
  history->add_option("--limit", limit, "at most N versions (0: all)")
      ->check(Unsigned(0, UINT32_MAX));

  // subscribe
  auto* subscribe = app.add_subcommand("subscribe", "tail changes (JSON lines)");
  std::vector<std::string> sub_sources, sub_collections, sub_keys;
  std::string from = "now", checkpoint;
  uint64_t max_changes = 0;
  subscribe->add_option("--source", sub_sources,
                        "only changes from these sources (repeatable); in the snapshot, "
                        "entities whose newest version is from them");
  auto* sub_collection =
      subscribe->add_option("--collection", sub_collections, "only these collections (repeatable)");
  subscribe->add_option("--key", sub_keys, "only these keys (JSON text, repeatable)");
  subscribe->add_option("--prefix", prefix, "string keys starting with this (needs --collection)")
      ->needs(sub_collection);
  subscribe->add_option("--from", from, "now | snapshot | <seq>")->capture_default_str();
  subscribe->add_option(
      "--checkpoint", checkpoint,
      "resume from this named checkpoint and keep progress in it: committed every "
      "--commit-every changes, after a quiet second and on a clean stop (SIGINT, SIGTERM, "
      "--max), so a clean restart continues exactly after the last printed change and a "
      "crash repeats at most the changes since the last commit");
  size_t commit_every = 1000;
  subscribe->add_option("--commit-every", commit_every, "changes between checkpoint commits")
      ->capture_default_str()
      ->check(Unsigned(1, 1000000));
  subscribe->add_option("--max", max_changes, "stop after N changes (0: never)")
      ->check(Unsigned(0, UINT64_MAX));
  bool until_caught_up = false;
  subscribe->add_flag("--until-caught-up", until_caught_up,
                      "stop once the stream has reached the last committed change");

  // session
  auto* session = app.add_subcommand("session", "contribution sessions");
  session->require_subcommand(1);
  auto* s_open = session->add_subcommand("open", "open a session; prints its id");
  std::string source, mode = "stream", session_id, payload_file;
  s_open->add_option("source", source, "a registered source (its format decodes upserts)")
      ->required();
  s_open->add_option("collection", collection, "the collection the records go to")->required();
  s_open
      ->add_option("--mode", mode,
                   "stream: visible as posted; accrue: visible on close; replace: on close "
                   "the records become the source's whole content of the collection")
      ->check(CLI::IsMember({"stream", "accrue", "replace"}))
      ->capture_default_str();
  auto* s_upsert = session->add_subcommand("upsert", "post records in the source's format");
  s_upsert->add_option("id", session_id, "the session id 'session open' printed")->required();
  s_upsert->add_option("file", payload_file, "records file ('-' or none: stdin)");
  auto* s_delete = session->add_subcommand("delete", "delete records by id");
  std::vector<std::string> delete_ids;
  s_delete->add_option("id", session_id, "the session id")->required();
  s_delete->add_option("keys", delete_ids, "ids (plain text; use JSON for non-strings)")
      ->required();
  auto* s_close = session->add_subcommand("close", "close (commit unless --discard)");
  bool discard = false;
  s_close->add_option("id", session_id, "the session id")->required();
  s_close->add_flag("--discard", discard,
                    "drop what an accrue/replace session staged instead of committing it");

  // source
  auto* src = app.add_subcommand("source", "registered sources");
  src->require_subcommand(1);
  auto* src_add = src->add_subcommand("add", "register (or replace) a source");
  cairn::SourceDefinition def;
  std::vector<std::string> key_specs, map_specs, schema_specs;
  src_add->add_option("name", def.name, "the source's name (tokens grant writes by it)")
      ->required();
  src_add->add_option("--format", def.format, "how its payloads are decoded")
      ->required()
      ->check(CLI::IsMember({"debezium", "goldengate", "infosphere", "sse-feed", "datapoints",
                             "bitbroker", "canonical"}));
  src_add->add_option("--key", key_specs,
                      "COLLECTION=field1,field2: key fields where the format carries none");
  src_add->add_option("--map", map_specs, "SOURCE_TABLE=COLLECTION: rename a collection");
  src_add->add_option("--default-collection", def.default_collection,
                      "collection for records that name none (datapoints, sse)");
  src_add->add_option("--schema", schema_specs, "COLLECTION=schema.json (JSON Schema)");
  auto* src_list = src->add_subcommand("list", "list sources (one JSON line each)");
  auto* src_get = src->add_subcommand("get", "one source, with its keys, maps and schemas");
  src_get->add_option("name", source, "the source's name")->required();
  auto* src_rm = src->add_subcommand("rm", "remove a source");
  src_rm->add_option("name", source, "the source's name")->required();

  // connector
  auto* con = app.add_subcommand("connector", "feeds cairnd pulls itself (admin)");
  con->require_subcommand(1);
  cairn::connectors::ConnectorDefinition cdef;
  std::vector<std::string> con_headers;
  uint64_t con_retention = 0, con_batch_ms = absl::ToInt64Milliseconds(cdef.batch_time);
  uint64_t con_max_backoff_ms = absl::ToInt64Milliseconds(cdef.max_backoff);
  uint64_t con_idle = absl::ToInt64Seconds(cdef.idle_timeout);
  std::string con_on_error = "stop", con_name;
  auto* con_add = con->add_subcommand("add", "create a connector (or replace and restart it)");
  con_add->add_option("name", cdef.name, "the connector's name")->required();
  std::vector<std::string> con_subjects;
  con_add
      ->add_option("--type", cdef.type,
                   "sse: Server-Sent Events over HTTP(S); nats: a JetStream durable consumer")
      ->capture_default_str()
      ->check(CLI::IsMember({"sse", "nats"}));
  con_add
      ->add_option("--source", cdef.source,
                   "the registered source (sse: format sse-feed; nats: the messages' format)")
      ->required();
  con_add
      ->add_option("--url", cdef.urls,
                   "sse: a feed URL, repeat for feeds read concurrently; nats: a server "
                   "(nats:// or tls://), repeat for a cluster's")
      ->required();
  con_add->add_option("--stream", cdef.stream, "nats: the JetStream stream");
  con_add->add_option("--filter-subject", cdef.filter_subject,
                      "nats: only the stream's messages on these subjects (a pattern)");
  con_add->add_option("--consumer", cdef.consumer,
                      "nats: the durable consumer's name (default cairn_<name>)");
  con_add->add_option("--subject", con_subjects,
                      "nats: 'pattern=collection': messages on matching subjects go to the "
                      "collection (repeat)");
  con_add->add_option("--header", con_headers, "'Name: value' sent with every request");
  con_add->add_option("--ca", cdef.ca_file, "PEM roots for https (default: the system's)");
  con_add->add_option("--retention-seconds", con_retention,
                      "how long the feed keeps events (away longer: status gap; 0: forever)");
  con_add->add_option("--batch", cdef.batch_events, "events per commit at most")
      ->capture_default_str();
  con_add
      ->add_option("--batch-ms", con_batch_ms, "commit a batch at most this long after its start")
      ->capture_default_str();
  con_add->add_flag("--durable", cdef.durable, "fsync each commit");
  con_add->add_option("--on-error", con_on_error, "a record the format rejects: stop or skip")
      ->capture_default_str()
      ->check(CLI::IsMember({"stop", "skip"}));
  con_add->add_option("--max-backoff-ms", con_max_backoff_ms, "the longest wait between retries")
      ->capture_default_str();
  con_add->add_option("--idle-timeout-seconds", con_idle, "reconnect after this long without data")
      ->capture_default_str();
  auto* con_list = con->add_subcommand("list", "every connector's definition (JSON lines)");
  auto* con_status =
      con->add_subcommand("status", "state and counters, one JSON line per connector URL");
  con_status->add_option("name", con_name, "one connector (default: all)");
  auto* con_rm = con->add_subcommand("rm", "stop a connector and forget it and its resume points");
  con_rm->add_option("name", con_name, "the connector's name")->required();

  // sink
  auto* snk = app.add_subcommand("sink", "the change feed delivered to a destination (admin)");
  snk->require_subcommand(1);
  cairn::connectors::SinkDefinition sdef;
  std::vector<std::string> sink_headers;
  std::string sink_from = "now", sink_name;
  uint64_t sink_timeout_ms = absl::ToInt64Milliseconds(sdef.timeout);
  uint64_t sink_max_backoff_ms = absl::ToInt64Milliseconds(sdef.max_backoff);
  auto* snk_add = snk->add_subcommand("add", "create a sink (or replace and restart it)");
  snk_add->add_option("name", sdef.name, "the sink's name")->required();
  snk_add->add_option("--type", sdef.type, "http: a webhook; nats: JetStream publishes")
      ->capture_default_str()
      ->check(CLI::IsMember({"http", "nats"}));
  snk_add
      ->add_option("--url", sdef.url,
                   "http: the webhook, each request POSTs a JSON array; nats: the servers, "
                   "nats:// or tls://, comma-separated")
      ->required();
  snk_add
      ->add_option("--subject", sdef.subject,
                   "nats: the subject; {collection}, {source} and {sink} are replaced")
      ->capture_default_str();
  snk_add->add_option("--omnia-schema", sdef.omnia_schema,
                      "omnia-datapoints: the messages' \"schema\"");
  snk_add->add_option("--header", sink_headers, "'Name: value' sent with every request");
  snk_add->add_option("--ca", sdef.ca_file, "PEM roots for https (default: the system's)");
  snk_add->add_option("--shape", sdef.shape, "message shape")
      ->capture_default_str()
      ->check(CLI::IsMember({"cairn", "debezium", "mia-projection-update", "omnia-datapoints"}));
  snk_add->add_option("--source", sdef.filter.sources, "only changes from this source (repeat)");
  snk_add->add_option("--collection", sdef.filter.collections, "only this collection (repeat)");
  snk_add->add_option("--prefix", sdef.filter.key_prefix, "only string keys with this prefix");
  snk_add->add_option("--key", sdef.filter.keys, "only this key, JSON text (repeat)");
  snk_add
      ->add_option("--from", sink_from, "where a new sink starts: now, beginning, or after a seq")
      ->capture_default_str();
  snk_add->add_option("--batch", sdef.batch_changes, "messages per request at most")
      ->capture_default_str();
  snk_add->add_option("--timeout-ms", sink_timeout_ms, "per request")->capture_default_str();
  snk_add->add_option("--max-backoff-ms", sink_max_backoff_ms, "the longest wait between retries")
      ->capture_default_str();
  auto* snk_list = snk->add_subcommand("list", "every sink's definition (JSON lines)");
  auto* snk_status = snk->add_subcommand("status", "state, checkpoint, lag and counters");
  snk_status->add_option("name", sink_name, "one sink (default: all)");
  auto* snk_rm =
      snk->add_subcommand("rm", "stop a sink and forget its checkpoint and dead letters");
  snk_rm->add_option("name", sink_name, "the sink's name")->required();
  auto* snk_dead = snk->add_subcommand("dead-letters", "messages the destination refused for good");
  snk_dead->add_option("name", sink_name, "the sink's name")->required();
  auto* snk_replay = snk->add_subcommand("replay", "send the dead letters again");
  snk_replay->add_option("name", sink_name, "the sink's name")->required();

  // checkpoint
  auto* cp = app.add_subcommand("checkpoint", "subscription checkpoints");
  cp->require_subcommand(1);
  std::string cp_name;
  auto* cp_list = cp->add_subcommand("list", "every checkpoint with its scope (admin)");
  auto* cp_get = cp->add_subcommand("get", "one checkpoint's seq");
  cp_get->add_option("name", cp_name, "the checkpoint's name")->required();
  auto* cp_rm = cp->add_subcommand("rm", "delete a checkpoint (admin)");
  cp_rm->add_option("name", cp_name, "the checkpoint's name")->required();

  // backup: create asks cairnd (into its --backup-dir). list, verify, prune
  // and restore work on a backup directory without a server: they are run
  // by cairn-backup, which links the engine; this tool does not.
  auto* bk = app.add_subcommand("backup", "backups of the store");
  bk->require_subcommand(1);
  std::vector<CLI::App*> bk_local;
  for (const char* name : {"list", "verify", "prune", "restore"}) {
    bk_local.push_back(
        bk->add_subcommand(name, absl::StrCat("cairn-backup ", name, " (see cairn-backup --help)"))
            ->prefix_command());
  }
  auto* bk_create = bk->add_subcommand(
      "create", "add a backup to cairnd's --backup-dir, or to DIR under it (admin)");
  std::string backup_subdir;
  bk_create->add_option("dir", backup_subdir,
                        "a directory under cairnd's --backup-dir (relative), e.g. nightly");

  auto* stats = app.add_subcommand("stats", "store, source and subscription statistics");
  auto* health = app.add_subcommand("health", "standard gRPC health check");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help is success; any other parse error is bad usage (exit 2).
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  for (CLI::App* local : bk_local) {
    if (*local) return RunBackupTool(argv[0], local->get_name(), local->remaining());
  }
  auto client_or = Client::Connect(options);
  if (!client_or.ok()) return Fail(client_or.status());
  Client& client = **client_or;

  if (*ingest) return Ingest(client, io);
  if (*get) {
    auto e = client.Get(collection, key);
    if (!e.ok()) return Fail(e.status());
    PrintEntity(*e);
    return 0;
  }
  if (*snapshot) {
    cairn::SnapshotOptions o{
        .collection = collection, .key_prefix = prefix, .include_incomplete = !exclude_incomplete};
    if (*seq_opt) o.as_of_seq = as_of_seq;
    if (*time_opt) {
      auto ts = ParseTime(as_of_time);
      if (!ts.ok()) return Fail(ts.status());
      o.as_of_position =
          cairn::Position{*ts, snapshot->count("--as-of-tick") ? as_of_tick : UINT64_MAX - 1};
    }
    auto s = client.Snapshot(o, [](const cairn::Entity& e) {
      PrintEntity(e);
      return true;
    });
    return s.ok() ? 0 : Fail(s);
  }
  if (*history) {
    auto versions = client.History(collection, key, {.reverse = reverse, .limit = limit});
    if (!versions.ok()) return Fail(versions.status());
    if (versions->empty()) {
      // As `get` answers an entity it does not have.
      return Fail(absl::NotFoundError(absl::StrCat("no versions of ", key, " in ", collection,
                                                   limit ? " (with --limit)" : "")));
    }
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
      std::cerr << "--from: expected now, snapshot or a seq, got '" << from << "'\n";
      return 2;
    }
    auto sub = client.Subscribe({.sources = sub_sources,
                                 .collections = sub_collections,
                                 .key_prefix = prefix,
                                 .keys = sub_keys},
                                start);
    if (!sub.ok()) return Fail(sub.status());
    uint64_t changes = 0;
    // Progress is committed in batches: the seq of the last printed change,
    // not yet committed. A clean stop commits it, so a restart continues
    // exactly after the last printed change; a crash repeats at most
    // commit_every changes (at-least-once).
    uint64_t printed = 0, committed = 0;
    absl::Time last_commit = absl::Now();
    auto commit = [&]() -> absl::Status {
      if (checkpoint.empty() || printed == committed) return absl::OkStatus();
      std::cout.flush();
      CAIRN_RETURN_IF_ERROR(client.CommitCheckpoint(checkpoint, printed, sub_collections));
      committed = printed;
      last_commit = absl::Now();
      return absl::OkStatus();
    };
    auto stop = [&](int rc) {
      absl::Status s = commit();
      return s.ok() ? rc : Fail(s);
    };
    static std::atomic<bool> stopping{false};
    std::signal(SIGINT, [](int) { stopping.store(true); });
    std::signal(SIGTERM, [](int) { stopping.store(true); });
    cairn::SubscriptionItem item;
    while (true) {
      if (stopping.load()) return stop(0);
      auto got = (*sub)->Next(absl::Milliseconds(200), &item);
      if (!got.ok()) {
        absl::Status s = commit();
        return Fail(s.ok() ? got.status() : s);
      }
      if (!*got) {
        // Quiet: commit what was printed a second ago or more.
        if (absl::Now() - last_commit > absl::Seconds(1)) {
          if (auto s = commit(); !s.ok()) return Fail(s);
        }
        continue;
      }
      switch (item.kind) {
        case cairn::SubscriptionItem::Kind::kSnapshotEntity:
          PrintEntity(item.entity);
          break;
        case cairn::SubscriptionItem::Kind::kSnapshotEnd:
          Line().U64("snapshot_end", item.seq).Print();
          printed = item.seq;  // the state as of it is printed
          break;
        case cairn::SubscriptionItem::Kind::kCaughtUp:
          Line().U64("caught_up", item.seq).Print();
          std::cout.flush();
          if (until_caught_up) return stop(0);
          break;
        case cairn::SubscriptionItem::Kind::kChange:
          PrintChange(item.change);
          std::cout.flush();
          if (!std::cout) return stop(1);  // stdout closed: what was printed counts
          printed = item.change.seq;
          if (printed - committed >= commit_every) {
            if (auto s = commit(); !s.ok()) return Fail(s);
          }
          if (max_changes && ++changes >= max_changes) return stop(0);
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
      bool json = !id.empty() &&
                  (id[0] == '{' || id[0] == '"' || id[0] == '-' || (id[0] >= '0' && id[0] <= '9'));
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
    for (auto [flag, specs, out] : {std::tuple{"--key", &key_specs, &keys},
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
  if (*src_list || *src_get) {
    std::vector<cairn::SourceDefinition> all;
    if (*src_get) {
      auto d = client.GetSource(source);
      if (!d.ok()) return Fail(d.status());
      all.push_back(*std::move(d));
    } else {
      auto list = client.ListSources();
      if (!list.ok()) return Fail(list.status());
      all = *std::move(list);
    }
    for (const auto& d : all) PrintSource(d, /*schemas=*/src_get->parsed());
    return 0;
  }
  if (*con_add) {
    for (const std::string& h : con_headers) {
      size_t colon = h.find(':');
      if (colon == std::string::npos || colon == 0) {
        std::cerr << "--header " << h << ": expected 'Name: value'\n";
        return 2;
      }
      cdef.headers[h.substr(0, colon)] =
          std::string(absl::StripLeadingAsciiWhitespace(h.substr(colon + 1)));
    }
    cdef.retention = absl::Seconds(con_retention);
    cdef.batch_time = absl::Milliseconds(con_batch_ms);
    cdef.max_backoff = absl::Milliseconds(con_max_backoff_ms);
    cdef.initial_backoff = std::min(cdef.initial_backoff, cdef.max_backoff);
    cdef.idle_timeout = absl::Seconds(con_idle);
    cdef.on_error = con_on_error == "skip" ? cairn::connectors::OnError::kSkip
                                           : cairn::connectors::OnError::kStop;
    for (const std::string& m : con_subjects) {
      size_t eq = m.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
        std::cerr << "--subject " << m << ": expected 'pattern=collection'\n";
        return 2;
      }
      cdef.subjects[m.substr(0, eq)] = m.substr(eq + 1);
    }
    auto s = client.PutConnector(cdef);
    return s.ok() ? 0 : Fail(s);
  }
  if (*con_list) {
    auto all = client.ListConnectors();
    if (!all.ok()) return Fail(all.status());
    for (const auto& d : *all) {
      Line()
          .Str("connector", d.name)
          .Str("type", d.type)
          .Str("source", d.source)
          .Strs("urls", d.urls)
          .Strs("headers",
                [&] {
                  std::vector<std::string> names;  // values may be secrets
                  for (const auto& [k, v] : d.headers) names.push_back(k);
                  return names;
                }())
          .U64("retention_seconds", absl::ToInt64Seconds(d.retention))
          .U64("batch", d.batch_events)
          .U64("batch_ms", absl::ToInt64Milliseconds(d.batch_time))
          .Bool("durable", d.durable)
          .Str("on_error", d.on_error == cairn::connectors::OnError::kSkip ? "skip" : "stop")
          .Str("stream", d.stream)
          .Str("filter_subject", d.filter_subject)
          .Str("consumer", d.consumer)
          .Strs("subjects",
                [&] {
                  std::vector<std::string> out;
                  for (const auto& [p, c] : d.subjects) out.push_back(p + "=" + c);
                  return out;
                }())
          .Print();
    }
    return 0;
  }
  if (*con_status) {
    auto all = client.ConnectorStatus(con_name);
    if (!all.ok()) return Fail(all.status());
    for (const auto& c : *all) {
      for (const auto& u : c.urls) {
        Line()
            .Str("connector", c.name)
            .Str("state", c.state)
            .Str("url", u.url)
            .Str("url_state", u.state)
            .Str("last_event_id", u.last_event_id)
            .Pos(u.last_position)
            .U64("events", u.events)
            .U64("applied", u.applied)
            .U64("duplicates", u.duplicates)
            .U64("skipped", u.skipped)
            .U64("reconnects", u.reconnects)
            .U64("gaps", u.gaps)
            .Str("last_error", u.last_error)
            .Str("last_error_time",
                 u.last_error_unix_micros == 0
                     ? std::string()
                     : absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                                        absl::FromUnixMicros(u.last_error_unix_micros),
                                        absl::UTCTimeZone()))
            .Print();
      }
    }
    return 0;
  }
  if (*con_rm) {
    auto s = client.RemoveConnector(con_name);
    return s.ok() ? 0 : Fail(s);
  }
  if (*snk_add) {
    for (const std::string& h : sink_headers) {
      size_t colon = h.find(':');
      if (colon == std::string::npos || colon == 0) {
        std::cerr << "--header " << h << ": expected 'Name: value'\n";
        return 2;
      }
      sdef.headers[h.substr(0, colon)] =
          std::string(absl::StripLeadingAsciiWhitespace(h.substr(colon + 1)));
    }
    sdef.timeout = absl::Milliseconds(sink_timeout_ms);
    sdef.max_backoff = absl::Milliseconds(sink_max_backoff_ms);
    sdef.initial_backoff = std::min(sdef.initial_backoff, sdef.max_backoff);
    bool from_now = sink_from == "now";
    if (sink_from == "beginning") {
      sdef.from_seq = 0;
    } else if (!from_now && !absl::SimpleAtoi(sink_from, &sdef.from_seq)) {
      std::cerr << "--from " << sink_from << ": expected now, beginning or a seq\n";
      return 2;
    }
    auto s = client.PutSink(sdef, from_now);
    return s.ok() ? 0 : Fail(s);
  }
  if (*snk_list) {
    auto all = client.ListSinks();
    if (!all.ok()) return Fail(all.status());
    for (const auto& d : *all) {
      std::vector<std::string> header_names;  // values may be secrets
      for (const auto& [k, v] : d.headers) header_names.push_back(k);
      Line()
          .Str("sink", d.name)
          .Str("type", d.type)
          .Str("url", d.url)
          .Strs("headers", header_names)
          .Str("shape", d.shape)
          .Str("subject", d.type == "nats" ? d.subject : std::string())
          .Strs("sources", d.filter.sources)
          .Strs("collections", d.filter.collections)
          .Str("prefix", d.filter.key_prefix)
          .Strs("keys", d.filter.keys)
          .U64("from_seq", d.from_seq)
          .U64("batch", d.batch_changes)
          .Print();
    }
    return 0;
  }
  if (*snk_status) {
    auto all = client.SinkStatus(sink_name);
    if (!all.ok()) return Fail(all.status());
    for (const auto& s : *all) {
      Line l;
      SinkFields(s, &l);
      l.U64("delivered", s.delivered)
          .U64("retries", s.retries)
          .U64("dead_letters", s.dead_letters)
          .Str("last_error", s.last_error)
          .Print();
    }
    return 0;
  }
  if (*snk_dead) {
    auto all = client.ListDeadLetters(sink_name);
    if (!all.ok()) return Fail(all.status());
    for (const auto& d : *all) {
      Line()
          .U64("seq", d.seq)
          .U64("http_status", static_cast<uint64_t>(d.http_status))
          .Str("response", d.response)
          .Raw("message", d.message)
          .Str("subject", d.subject)
          .Print();
    }
    return 0;
  }
  if (*snk_replay) {
    auto n = client.ReplayDeadLetters(sink_name);
    if (!n.ok()) return Fail(n.status());
    Line().Str("sink", sink_name).U64("replayed", *n).Print();
    return 0;
  }
  if (*snk_rm) {
    auto s = client.RemoveSink(sink_name);
    return s.ok() ? 0 : Fail(s);
  }
  if (*cp_list) {
    auto all = client.ListCheckpoints();
    if (!all.ok()) return Fail(all.status());
    for (const auto& c : *all) {
      Line l;
      l.Str("checkpoint", c.name).U64("seq", c.seq);
      l.Strs("collections", c.collections);
      l.Print();
    }
    return 0;
  }
  if (*cp_get) {
    auto seq = client.GetCheckpoint(cp_name);
    if (!seq.ok()) return Fail(seq.status());
    Line().Str("checkpoint", cp_name).U64("seq", *seq).Print();
    return 0;
  }
  if (*cp_rm) {
    auto s = client.DeleteCheckpoint(cp_name);
    return s.ok() ? 0 : Fail(s);
  }
  if (*src_rm) {
    auto s = client.RemoveSource(source);
    return s.ok() ? 0 : Fail(s);
  }
  if (*bk_create) {
    auto b = client.Backup(backup_subdir);
    if (!b.ok()) return Fail(b.status());
    PrintBackup(*b);
    return 0;
  }
  if (*stats) {
    auto st = client.Stats();
    if (!st.ok()) return Fail(st.status());
    Line()
        .U64("last_seq", st->store.last_seq)
        .U64("oldest_seq", st->store.oldest_seq)
        .U64("oldest_timestamp", st->store.oldest_position.timestamp)
        .Print();
    const cairn::StoreStats::Versions& v = st->store.versions;
    Line()
        .Str("cairn_version", v.cairn)
        .U64("format_version", v.format)
        .Str("created_by", v.created_by)
        .Str("previously_opened_by", v.previously_opened_by)
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
    for (const auto& s : st->sinks) {
      Line l;
      SinkFields(s, &l);
      l.Print();
    }
    const cairn::StoreStats::Backups& b = st->store.backups;
    Line()
        .U64("backups", b.count)
        .U64("backup_errors", b.errors)
        .U64("last_backup_id", b.last_id)
        .U64("last_backup_seq", b.last_seq)
        .Str("last_backup_time",
             b.last_id == 0
                 ? std::string()
                 : absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(b.last_unix_micros),
                                    absl::UTCTimeZone()))
        .U64("last_backup_size_bytes", b.last_size_bytes)
        .U64("last_backup_copied_bytes", b.last_copied_bytes)
        .U64("last_backup_duration_ms", static_cast<uint64_t>(b.last_duration_micros / 1000))
        .Str("last_backup_error", b.last_error)
        .Print();
    const cairn::StoreStats::Resources& r = st->store.resources;
    Line()
        .U64("memory_budget", r.memory_budget)
        .U64("block_cache_capacity", r.block_cache_capacity)
        .U64("block_cache_usage", r.block_cache_usage)
        .U64("memtables", r.memtables)
        .U64("recent_changes", r.recent_changes)
        .U64("reserved", r.reserved)
        .U64("subscriber_buffers", r.subscriber_buffers)
        .U64("wal_bytes", r.wal_bytes)
        .U64("wal_files", r.wal_files)
        .U64("sst_bytes", r.sst_bytes)
        .U64("pending_compaction_bytes", r.pending_compaction_bytes)
        .Print();
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
