#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace shardrun::testing {

std::string SharedPath(const std::string& relative) {
  return std::string(SHARDRUN_SHARED_DIR) + "/" + relative;
}

CommandResult RunShardrun(const std::vector<std::string>& args) {
  CommandResult result;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) return result;
  std::vector<std::string> argv_storage = {SHARDRUN_BINARY};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Drain both pipes together so a chatty child never blocks on a full pipe.
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::map<std::string, std::string> ReadKeyValues(const std::string& path) {
  std::map<std::string, std::string> values;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n')) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    absl::string_view value = line.substr(colon + 1);
    absl::ConsumePrefix(&value, " ");
    values[std::string(line.substr(0, colon))] = std::string(value);
  }
  return values;
}

std::vector<int32_t> IdsAfter(const std::string& text, const std::string& key) {
  std::vector<int32_t> ids;
  const std::string marker = key + ":";
  const size_t at = text.find(marker);
  if (at == std::string::npos) return ids;
  const size_t end = text.find('\n', at);
  const std::string line = text.substr(at + marker.size(), end - at - marker.size());
  for (absl::string_view part : absl::StrSplit(line, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) ids.push_back(id);
  }
  return ids;
}

std::vector<float> ReadFloats(const std::string& path) {
  std::vector<float> values;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n', absl::SkipWhitespace())) {
    float v;
    if (absl::SimpleAtof(absl::StripAsciiWhitespace(line), &v)) values.push_back(v);
  }
  return values;
}

std::vector<int> RegisteredWorkerPids(const std::string& log) {
  std::vector<int> pids;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (line.find(" registered: ") == absl::string_view::npos) continue;
    const size_t at = line.find(", pid ");
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + 6);
    rest = rest.substr(0, rest.find(','));
    int pid;
    if (absl::SimpleAtoi(rest, &pid)) pids.push_back(pid);
  }
  return pids;
}

bool ProcessAlive(int pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (stat.empty()) return false;
  const size_t paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'Z';
}

BackgroundShardrun::BackgroundShardrun(const std::vector<std::string>& args) {
  dir_ = MakeTempDir();
  std::vector<std::string> argv_storage = {SHARDRUN_BINARY};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = dir_ + "/out", err = dir_ + "/err";
  pid_ = fork();
  if (pid_ == 0) {
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1);
    dup2(e, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
}

BackgroundShardrun::~BackgroundShardrun() {
  if (pid_ > 0 && exit_code_ < 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

std::string BackgroundShardrun::err() const { return ReadFile(dir_ + "/err"); }

int BackgroundShardrun::Wait(int timeout_ms) {
  if (exit_code_ >= 0) return exit_code_;
  if (!WaitForExit(pid_, timeout_ms)) return -1;
  int status = 0;
  waitpid(pid_, &status, 0);
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return exit_code_;
}

bool WaitForExit(int pid, int timeout_ms) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return !ProcessAlive(pid);  // already gone
  pollfd p{fd, POLLIN, 0};
  const int ready = poll(&p, 1, timeout_ms);
  close(fd);
  // A zombie child counts as exited (its parent reaps it).
  return ready > 0 || !ProcessAlive(pid);
}

bool WaitForFileCondition(const std::string& path, int timeout_ms,
                          const std::function<bool()>& predicate) {
  const int fd = inotify_init1(IN_CLOEXEC);
  inotify_add_watch(fd, path.c_str(), IN_MODIFY | IN_CLOSE_WRITE);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool held = predicate();
  while (!held && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    // Wake on a write, and at least every 200 ms in case the file was written before the
    // watch was added.
    if (poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 200))) > 0) {
      char buf[4096];
      (void)!read(fd, buf, sizeof(buf));
    }
    held = predicate();
  }
  close(fd);
  return held;
}

namespace {

// Binds a loopback TCP socket to `port` (0: any) and returns the port it got, or 0.
int TryBind(int port) {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  int got = 0;
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
    got = ntohs(addr.sin_port);
  }
  close(s);
  return got;
}

}  // namespace

int FreePort() {
  // The port is free now but bound later by the process under test. Taken from below the
  // kernel's ephemeral range, it cannot be handed meanwhile to a socket that binds port 0 (every
  // worker socket, the tests running beside this one): only another FreePort could take it.
  int ephemeral_low = 32768;
  if (std::FILE* f = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(f, "%d", &ephemeral_low) != 1) ephemeral_low = 32768;
    std::fclose(f);
  }
  constexpr int kLowest = 10000;
  if (ephemeral_low > kLowest + 1000) {
    std::random_device random;
    for (int attempt = 0; attempt < 100; ++attempt) {
      const int port = kLowest + static_cast<int>(random() % (ephemeral_low - kLowest));
      if (TryBind(port) == port) return port;
    }
  }
  return TryBind(0);
}

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/shardrun-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

}  // namespace shardrun::testing
