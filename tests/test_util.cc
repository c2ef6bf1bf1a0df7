#include "tests/test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
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

std::string MakeTempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/shardrun-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

}  // namespace shardrun::testing
