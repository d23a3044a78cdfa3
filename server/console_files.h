// The web console's static files (server/console/), built into cairnd by
// server/console/embed.cmake and served under /console/ (http_server.cc).
#ifndef CAIRN_SERVER_CONSOLE_FILES_H_
#define CAIRN_SERVER_CONSOLE_FILES_H_

#include <cstddef>

namespace cairn::server {

struct ConsoleFile {
  const char* name;  // "index.html"
  const char* content_type;
  const char* data;
  size_t size;
};
extern const ConsoleFile kConsoleFiles[];
extern const size_t kConsoleFileCount;

}  // namespace cairn::server

#endif  // CAIRN_SERVER_CONSOLE_FILES_H_
