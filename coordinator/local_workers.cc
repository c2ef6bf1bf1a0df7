#include "coordinator/local_workers.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// Reaps `pid` if it has exited; true when it is gone.
bool Reap(pid_t pid) {
  int status = 0;
  const pid_t r = waitpid(pid, &status, WNOHANG);
  return r == pid || (r < 0 && errno == ECHILD);
}

}  // namespace

LocalWorkers::~LocalWorkers() { StopAll(absl::ZeroDuration()); }

absl::Status LocalWorkers::Start(const std::string& id, const std::vector<std::string>& args) {
  std::vector<std::string> argv_storage = {"/proc/self/exe", "worker"};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    // Die with the coordinator; if it is already gone, do not start at all.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  pids_.push_back(pid);
  ids_.push_back(id);
  spdlog::debug("started worker {} (pid {})", id, pid);
  return absl::OkStatus();
}

void LocalWorkers::StopAll(absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  auto all_reaped = [&] {
    bool all = true;
    for (pid_t& pid : pids_) {
      if (pid > 0 && Reap(pid)) pid = -1;
      all = all && pid < 0;
    }
    return all;
  };
  while (!all_reaped() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  for (int signal : {SIGTERM, SIGKILL}) {
    if (all_reaped()) break;
    for (pid_t pid : pids_) {
      if (pid > 0) kill(pid, signal);
    }
    const absl::Time until = absl::Now() + absl::Milliseconds(500);
    while (!all_reaped() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  }
  pids_.clear();
  ids_.clear();
}

}  // namespace shardrun
