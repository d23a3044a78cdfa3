// One URL of an `sse` connector: a thread that reads the stream with
// libcurl, decodes it with the source's SseDecoder and commits the events
// with the URL's resume point (README "Connectors and sinks": the loop, the resume
// record, backoff, gap and error policy).
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_SSE_READER_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_SSE_READER_H_

#include <curl/curl.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "cairn/connectors.h"
#include "cairn/formats.h"
#include "cairn/source.h"
#include "cairn/store.h"
#include "reader.h"

namespace cairn::connectors {

// The side records of a connector: its definition, and each URL's resume
// point ({"url", "last_event_id", "last_seen_micros"}), named by a hash of
// the URL (FNV-1a, 64 bits, hex), so that a definition whose URLs change
// order keeps each URL's own.
std::string DefinitionRecord(std::string_view name);
std::string ResumePrefix(std::string_view name);
std::string ResumeRecord(std::string_view name, std::string_view url);
std::string ResumeJson(std::string_view url, std::string_view id, int64_t seen_micros);

class SseReader : public Reader {
 public:
  SseReader(Store* store, ConnectorDefinition def, size_t url_index);
  ~SseReader() override;  // Stop()
  SseReader(const SseReader&) = delete;
  SseReader& operator=(const SseReader&) = delete;

  void Start() override;
  void RequestStop() override;
  void Stop() override;
  UrlStatus status() const override;

 private:
  enum class End { kDropped, kEnded, kFailed };

  void Run();
  End Connect();
  // libcurl callbacks (on the reader's thread).
  static size_t OnData(char* data, size_t size, size_t n, void* self);
  static int OnProgress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
  bool Consume(std::string_view chunk);  // false: abort the transfer
  bool Decoded(std::vector<Event>* events);
  // Commits the pending events with the resume point; false when the store
  // refused (the connection is dropped and read again from the last
  // committed point).
  bool Commit();
  bool MaybeCommit();  // when the batch is full or old enough
  void Heartbeat();    // the resume point's last_seen, while connected
  void SetState(std::string_view state);
  void Error(std::string_view message);
  void Sleep(absl::Duration d);

  Store* const store_;
  const ConnectorDefinition def_;
  const size_t index_;
  const std::string url_;
  const std::string record_;
  SourceDefinition source_;

  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable absl::Mutex mu_;
  absl::CondVar wake_;  // Sleep ends early on Stop
  UrlStatus status_ ABSL_GUARDED_BY(mu_);

  // The thread's own.
  void* curl_ = nullptr;
  std::unique_ptr<formats::SseDecoder> decoder_;
  std::vector<Event> pending_;
  std::string pending_id_;    // the resume point once pending_ commits
  std::string committed_id_;  // the resume point in the store
  absl::Time first_pending_;
  absl::Time last_byte_;
  absl::Time last_seen_write_;
  int64_t last_seen_micros_ = 0;          // as read at start, then as written
  bool checked_status_ = false;           // the HTTP status of this connection
  bool streamed_ = false;                 // this connection delivered an event
  bool gap_ = false;                      // this connection came after an absence
  std::optional<uint64_t> retry_millis_;  // the stream's last `retry:`
  End end_ = End::kDropped;
  absl::Status failure_;
};

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_SSE_READER_H_
