// Helpers shared by the tests: paths of the reference material, running the shardrun binary,
// reading reference files.
#ifndef SHARDRUN_TESTS_TEST_UTIL_H_
#define SHARDRUN_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace shardrun::testing {

// ../shared/<relative>.
std::string SharedPath(const std::string& relative);

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
};
// Runs the built shardrun executable with `args` (no shell), capturing stdout and stderr.
CommandResult RunShardrun(const std::vector<std::string>& args);

std::string ReadFile(const std::string& path);
// "key: value" lines.
std::map<std::string, std::string> ReadKeyValues(const std::string& path);
// The comma-separated ids after "<key>: " in `text` (empty when the line is absent or empty).
std::vector<int32_t> IdsAfter(const std::string& text, const std::string& key);
// One float per line.
std::vector<float> ReadFloats(const std::string& path);

// PIDs listed in shardrun's log lines "worker ID registered: host H, pid N, ...".
std::vector<int> RegisteredWorkerPids(const std::string& log);
// Whether a process with this pid exists (and is not a zombie).
bool ProcessAlive(int pid);

// A shardrun process running in the background; stdout and stderr go to files.
class BackgroundShardrun {
 public:
  explicit BackgroundShardrun(const std::vector<std::string>& args);
  ~BackgroundShardrun();  // kills and reaps the process if it still runs
  int pid() const { return pid_; }
  std::string err() const;  // what it has written to stderr so far
  std::string err_path() const { return dir_ + "/err"; }
  // Waits (on the process, not by sleeping) until it exits or `timeout_ms` passes; returns
  // the exit code (128 + signal), or -1 on timeout.
  int Wait(int timeout_ms);

 private:
  int pid_ = -1;
  int exit_code_ = -1;
  std::string dir_;
};

// Waits until `pid` (any process) has exited, up to `timeout_ms`; true if it did.
bool WaitForExit(int pid, int timeout_ms);
// Waits until `predicate()` holds, re-checking whenever `path` is written (inotify), up to
// `timeout_ms`; true if it held.
bool WaitForFileCondition(const std::string& path, int timeout_ms,
                          const std::function<bool()>& predicate);
// A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral range where it can.
int FreePort();

// A fresh directory under the test's temporary directory, removed by the caller if wanted.
std::string MakeTempDir();

}  // namespace shardrun::testing

#endif  // SHARDRUN_TESTS_TEST_UTIL_H_
