// nats_tool: what the nats tests and benchmarks do to a JetStream server
// (libnats), one command per run; JSON lines out.
//
//   nats_tool URL add-stream NAME SUBJECT... [--dup-window-ms N]
//   nats_tool URL publish SUBJECT FILE [--id-prefix P]   each line one message
//   nats_tool URL publish-map FILE         lines "subject<TAB>payload"
//   nats_tool URL messages STREAM          every stored message:
//                                          {"seq","subject","id","data"}
//   nats_tool URL stream-info STREAM       {"messages","last_seq"}
//   nats_tool URL consumer-info STREAM CONSUMER
//                                          {"ack_floor","pending","ack_pending","redelivered"}
#include <nats/nats.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace {

[[noreturn]] void Die(const std::string& what, natsStatus s) {
  std::cerr << "nats_tool: " << what << ": " << natsStatus_GetText(s);
  natsStatus last = NATS_OK;
  if (const char* detail = nats_GetLastError(&last); detail && *detail) std::cerr << ": " << detail;
  std::cerr << "\n";
  std::exit(1);
}

void Check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) Die(what, s);
}

std::vector<std::string> Lines(const char* path) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "nats_tool: cannot read " << path << "\n";
    std::exit(1);
  }
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

void Publish(jsCtx* js, const std::string& subject, const std::string& data,
             const std::string& id) {
  natsMsg* msg = nullptr;
  Check(natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size())),
        "create a message");
  if (!id.empty()) Check(natsMsgHeader_Set(msg, "Nats-Msg-Id", id.c_str()), "set Nats-Msg-Id");
  Check(js_PublishMsgAsync(js, &msg, nullptr), "publish to " + subject);
  natsMsg_Destroy(msg);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: nats_tool URL COMMAND ...\n";
    return 2;
  }
  std::string cmd = argv[2];
  natsConnection* nc = nullptr;
  Check(natsConnection_ConnectTo(&nc, argv[1]), std::string("connect to ") + argv[1]);
  jsCtx* js = nullptr;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = 4096;
  Check(natsConnection_JetStream(&js, nc, &jo), "JetStream");
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  jsErrCode jerr = static_cast<jsErrCode>(0);
  if (cmd == "add-stream" && argc >= 5) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = argv[3];
    std::vector<const char*> subjects;
    int64_t dup_ms = 0;
    for (int i = 4; i < argc; ++i) {
      if (std::strcmp(argv[i], "--dup-window-ms") == 0 && i + 1 < argc) {
        dup_ms = std::atoll(argv[++i]);
      } else {
        subjects.push_back(argv[i]);
      }
    }
    cfg.Subjects = subjects.data();
    cfg.SubjectsLen = static_cast<int>(subjects.size());
    cfg.Storage = js_FileStorage;
    if (dup_ms > 0) cfg.Duplicates = dup_ms * 1000000;
    jsStreamInfo* si = nullptr;
    Check(js_AddStream(&si, js, &cfg, nullptr, &jerr), "add stream");
    jsStreamInfo_Destroy(si);
  } else if (cmd == "publish" && argc >= 5) {
    std::string prefix;
    if (argc >= 7 && std::strcmp(argv[5], "--id-prefix") == 0) prefix = argv[6];
    auto lines = Lines(argv[4]);
    for (size_t i = 0; i < lines.size(); ++i) {
      Publish(js, argv[3], lines[i], prefix.empty() ? "" : prefix + std::to_string(i));
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    Check(js_PublishAsyncComplete(js, &po), "wait for the acks");
  } else if (cmd == "publish-map" && argc >= 4) {
    for (const std::string& line : Lines(argv[3])) {
      size_t tab = line.find('\t');
      if (tab == std::string::npos) {
        std::cerr << "nats_tool: a line without a tab\n";
        return 1;
      }
      Publish(js, line.substr(0, tab), line.substr(tab + 1), "");
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    Check(js_PublishAsyncComplete(js, &po), "wait for the acks");
  } else if (cmd == "stream-info" && argc >= 4) {
    jsStreamInfo* si = nullptr;
    Check(js_GetStreamInfo(&si, js, argv[3], nullptr, &jerr), "stream info");
    w.StartObject();
    w.Key("messages");
    w.Uint64(si->State.Msgs);
    w.Key("last_seq");
    w.Uint64(si->State.LastSeq);
    w.EndObject();
    jsStreamInfo_Destroy(si);
    std::cout << buf.GetString() << "\n";
  } else if (cmd == "consumer-info" && argc >= 5) {
    jsConsumerInfo* ci = nullptr;
    Check(js_GetConsumerInfo(&ci, js, argv[3], argv[4], nullptr, &jerr), "consumer info");
    w.StartObject();
    w.Key("ack_floor");
    w.Uint64(ci->AckFloor.Stream);
    w.Key("pending");
    w.Uint64(ci->NumPending);
    w.Key("ack_pending");
    w.Int64(ci->NumAckPending);
    w.Key("redelivered");
    w.Int64(ci->NumRedelivered);
    w.EndObject();
    jsConsumerInfo_Destroy(ci);
    std::cout << buf.GetString() << "\n";
  } else if (cmd == "messages" && argc >= 4) {
    jsStreamInfo* si = nullptr;
    Check(js_GetStreamInfo(&si, js, argv[3], nullptr, &jerr), "stream info");
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    for (uint64_t seq = first; last > 0 && seq <= last; ++seq) {
      natsMsg* msg = nullptr;
      natsStatus s = js_GetMsg(&msg, js, argv[3], seq, nullptr, &jerr);
      if (s == NATS_NOT_FOUND) continue;
      Check(s, "get message " + std::to_string(seq));
      const char* id = nullptr;
      natsMsgHeader_Get(msg, "Nats-Msg-Id", &id);
      buf.Clear();
      w.Reset(buf);
      w.StartObject();
      w.Key("seq");
      w.Uint64(seq);
      w.Key("subject");
      w.String(natsMsg_GetSubject(msg));
      w.Key("id");
      w.String(id ? id : "");
      w.Key("data");
      w.String(natsMsg_GetData(msg), static_cast<rapidjson::SizeType>(natsMsg_GetDataLength(msg)));
      w.EndObject();
      std::cout << buf.GetString() << "\n";
      natsMsg_Destroy(msg);
    }
  } else {
    std::cerr << "nats_tool: unknown command or missing arguments: " << cmd << "\n";
    return 2;
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return 0;
}
