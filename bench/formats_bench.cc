// Decode throughput per input format (MB/s, events/s) on payloads shaped like
// the fixtures, and Debezium decode+ingest against ingesting the same events
// already decoded, in one run.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "cairn/formats.h"
#include "cairn/store.h"

namespace cairn::formats {
namespace {

constexpr int kRecords = 1000;

// One payload of kRecords records; `base` shifts keys and positions so that
// successive payloads are new events.
std::string Payload(const std::string& format, int base) {
  std::string out;
  auto n = [&](int i) { return base + i; };
  if (format == "debezium") {
    for (int i = 0; i < kRecords; ++i) {
      absl::StrAppend(
          &out, R"({"before":null,"after":{"id":)", n(i),
          R"(,"name":"scooter","description":"Small 2-wheel scooter","weight":3.140000104904175},)",
          R"("source":{"version":"1.2.1.Final","connector":"postgresql","name":"fullfillment",)",
          R"("ts_ms":)", 1596001099434 + n(i), R"(,"snapshot":"false","db":"postgres",)",
          R"("schema":"inventory","table":"products","txId":601,"lsn":)", 34078720 + n(i),
          R"(,"xmin":null},"op":"u","ts_ms":1596001099434,"transaction":null})", "\n");
    }
  } else if (format == "goldengate") {
    for (int i = 0; i < kRecords; ++i) {
      absl::StrAppend(
          &out, R"({"table":"OGG.TBL_TEST","pos":")", 100000 + n(i),
          R"(","primary_keys":["id"],"after":{"id":)", n(i),
          R"(,"name":"scooter","description":"Small 2-wheel scooter","weight":3.140000104904175},)",
          R"("op_type":"I","op_ts":"2020-05-13 15:40:06.000000"})", "\n");
    }
  } else if (format == "infosphere") {
    for (int i = 0; i < kRecords; ++i) {
      absl::StrAppend(
          &out, R"({"key":{"USER_ID":)", n(i),
          R"(,"FISCAL_CODE":"ABCDEF12B02M100O"},"value":{"NAME":456,"COINS":300000000,"CITY":"Milano"},"timestamp":")",
          1234556789 + n(i), R"(","offset":")", n(i), "\"}\n");
    }
  } else if (format == "sse-feed") {
    for (int i = 0; i < kRecords; ++i) {
      absl::StrAppend(&out, "event: ", i % 2 ? "update" : "load", "\n",
                      R"(data: {"entity":"account","key":{"acct_no":)", n(i),
                      R"(},"timestamp":"2026-11-20T10:00:00.000Z","tick":)", n(i), "}\n",
                      R"(data: {"acct_no":)", n(i),
                      R"(,"status":"ACTIVE","plan":"gold","balance":120.5})", "\n\n");
    }
  } else if (format == "datapoints") {
    out = R"({"data":{"items":[)";
    for (int item = 0; item < kRecords / 100; ++item) {
      absl::StrAppend(&out, item ? "," : "", R"({"id":"series-)", base + item,
                      R"(","datapoints":[)");
      for (int p = 0; p < 100; ++p) {
        absl::StrAppend(&out, p ? "," : "", R"({"time":)", 1543572000000 + n(p) * 1000,
                        R"(,"value":124.5,"status":192})");
      }
      out += "]}";
    }
    out += "]}}";
  } else if (format == "bitbroker") {
    out = "[";
    for (int i = 0; i < kRecords; ++i) {
      absl::StrAppend(
          &out, i ? "," : "", R"({"id":"C)", n(i),
          R"(","name":"United Kingdom","entity":{"area":242900,"calling_code":44,"capital":"London","code":"GB","continent":"Europe","currency":{"code":"GBP","name":"Sterling"},"population":66040229}})");
    }
    out += "]";
  } else if (format == "canonical") {
    for (int i = 0; i < kRecords; ++i) {
      absl::StrAppend(&out, R"({"collection":"account","key":)", n(i),
                      R"(,"op":"upsert","position":{"timestamp":)", 1700000000000000 + n(i),
                      R"(,"tick":0},"payload":{"acct_no":)", n(i),
                      R"(,"status":"ACTIVE","plan":"gold","balance":120.5}})", "\n");
    }
  }
  return out;
}

SourceDefinition Source(const std::string& format) {
  return {.name = "bench",
          .format = format,
          .key_fields = {{"products", {"id"}}},
          .default_collection = "default",
          .json_schemas = {{"default",
                            R"({"type":"object","required":["code","population"],
                               "properties":{"population":{"type":"integer"}}})"}}};
}

void BM_Decode(benchmark::State& state, const std::string& format) {
  SourceDefinition source = Source(format);
  std::string payload = Payload(format, 0);
  size_t events = 0;
  for (auto _ : state) {
    auto r = Decode(source, payload);
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    events += r->size();
    benchmark::DoNotOptimize(r->data());
  }
  state.SetBytesProcessed(state.iterations() * payload.size());
  state.SetItemsProcessed(events);
}

// A store in a fresh directory under /tmp, removed afterwards.
struct TempStore {
  TempStore() {
    char tmpl[] = "/tmp/cairn-bench-XXXXXX";
    dir = mkdtemp(tmpl);
    store = *Store::Open(dir, Options{});
  }
  ~TempStore() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  std::string dir;
  std::unique_ptr<Store> store;
};

// Debezium payloads ingested; with `timed_decode` the decode is timed too
// (the server's IngestPayloads path), without it only the ingest of events
// decoded beforehand.
void BM_DebeziumIngest(benchmark::State& state, bool timed_decode) {
  TempStore t;
  SourceDefinition source = Source("debezium");
  int base = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::string payload = Payload("debezium", base);
    base += kRecords;
    absl::StatusOr<std::vector<Event>> events;
    if (!timed_decode) events = Decode(source, payload);
    state.ResumeTiming();
    if (timed_decode) events = Decode(source, payload);
    auto r = t.store->Ingest(*std::move(events), {});
    if (!r.ok()) state.SkipWithError(std::string(r.status().message()).c_str());
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

BENCHMARK_CAPTURE(BM_Decode, debezium, std::string("debezium"));
BENCHMARK_CAPTURE(BM_Decode, goldengate, std::string("goldengate"));
BENCHMARK_CAPTURE(BM_Decode, infosphere, std::string("infosphere"));
BENCHMARK_CAPTURE(BM_Decode, sse_feed, std::string("sse-feed"));
BENCHMARK_CAPTURE(BM_Decode, datapoints, std::string("datapoints"));
BENCHMARK_CAPTURE(BM_Decode, bitbroker, std::string("bitbroker"));
BENCHMARK_CAPTURE(BM_Decode, canonical, std::string("canonical"));
BENCHMARK_CAPTURE(BM_DebeziumIngest, decode_and_ingest, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_DebeziumIngest, pre_decoded, false)->UseRealTime();

}  // namespace
}  // namespace cairn::formats

BENCHMARK_MAIN();
