// Runs a real cairnd on loopback for the end-to-end and crash tests (the
// including target defines CAIRND_PATH).
#ifndef CAIRN_TESTS_COMMON_SERVER_PROCESS_H_
#define CAIRN_TESTS_COMMON_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace cairn::e2e {

class ServerProcess {
 public:
  // Starts cairnd on 127.0.0.1 with a free port, serving `data_dir`; extra
  // flags are appended; `binary` is the cairnd to run (the soak runs a
  // sanitized one). Waits until the port file appears.
  ServerProcess(const std::string& data_dir, std::vector<std::string> extra = {},
                std::string binary = CAIRND_PATH)
      : data_dir_(data_dir), extra_(std::move(extra)), binary_(std::move(binary)) {
    Start();
  }
  ~ServerProcess() { Kill(SIGKILL); }

  void Start(int port = 0) {
    port_file_ = data_dir_ + ".port";
    std::filesystem::remove(port_file_);
    std::vector<std::string> args = {
        binary_,       "--data-dir", data_dir_,     "--listen", "127.0.0.1:" + std::to_string(port),
        "--port-file", port_file_,   "--log-level", "warn"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = fork();
    if (pid_ == 0) {
      // Die with the test process, even if it crashes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 500 && !std::filesystem::exists(port_file_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::ifstream(port_file_) >> port_;
  }

  // Sends `sig` and reaps the process; returns its exit status (or -signal).
  int Kill(int sig) {
    if (pid_ <= 0) return 0;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

  // Restarts on the same port (clients reconnect to the same address).
  void Restart(int sig) {
    Kill(sig);
    Start(port_);
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::string data_dir_;
  std::vector<std::string> extra_;
  std::string binary_;
  std::string port_file_;
  pid_t pid_ = 0;
  int port_ = 0;
};

}  // namespace cairn::e2e

#endif  // CAIRN_TESTS_COMMON_SERVER_PROCESS_H_
