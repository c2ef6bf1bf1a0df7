// Worker processes the coordinator starts on this machine (`shardrun --shards N`).
//
// Each child runs `shardrun worker ...` from this same executable. A child asks the kernel to
// kill it when the coordinator dies (PR_SET_PDEATHSIG), and workers also exit when the
// coordinator goes silent, so no worker outlives its coordinator, even after SIGKILL.
#ifndef SHARDRUN_COORDINATOR_LOCAL_WORKERS_H_
#define SHARDRUN_COORDINATOR_LOCAL_WORKERS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace shardrun {

class LocalWorkers {
 public:
  LocalWorkers() = default;
  LocalWorkers(const LocalWorkers&) = delete;
  LocalWorkers& operator=(const LocalWorkers&) = delete;
  ~LocalWorkers();  // stops whatever is still running

  // Starts `shardrun worker` with `args`.
  absl::Status Start(const std::string& id, const std::vector<std::string>& args);

  // Waits up to `grace` for the children to exit on their own (after a shutdown message),
  // then terminates the rest (SIGTERM, then SIGKILL) and reaps them all.
  void StopAll(absl::Duration grace);

  const std::vector<pid_t>& pids() const { return pids_; }

 private:
  std::vector<pid_t> pids_;
  std::vector<std::string> ids_;
};

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_LOCAL_WORKERS_H_
