// Faults a worker can inflict on itself, for testing recovery (off unless asked for).
//
// Given as `--inject SPEC` or SHARDRUN_INJECT=SPEC, SPEC being one of
//   kill@step=N           SIGKILL itself when the activation of step N arrives
//   kill@load             SIGKILL itself while loading its shard
//   stall@step=N:ms=M     stop answering for M ms at step N (a hung tab)
//   drop@step=N           compute step N but never send its result
//   duplicate@step=N      send the result of step N twice
//   corrupt@step=N        send step N's result with a garbled envelope
//   slow@ms=M             take M ms longer over every step (lasts)
//   slow@x=F              take F times as long over every step (a tab whose CPU another
//                         process takes; lasts)
//   gpu-lost@step=N       the Vulkan device is lost at step N: that step's queue submission
//                         and every later one report VK_ERROR_DEVICE_LOST (Vulkan workers)
//   gpu-oom@load          every device allocation while loading the shard reports
//                         VK_ERROR_OUT_OF_DEVICE_MEMORY (Vulkan workers)
//   gpu-lost@serve=N      the Vulkan device is lost just before the worker serves its N-th
//                         expert request for another worker (expert plans)
// Steps are the coordinator's step numbers (Activation.step). Each fault but slow fires once.
// The GPU faults go through the backend's real error path (kernels/backend_factory.h).
#ifndef SHARDRUN_WORKER_FAULT_INJECTION_H_
#define SHARDRUN_WORKER_FAULT_INJECTION_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace shardrun {

struct Fault {
  enum class Kind {
    kNone,
    kKill,
    kKillAtLoad,
    kStall,
    kDrop,
    kDuplicate,
    kCorrupt,
    kSlow,
    kGpuLost,
    kGpuOomAtLoad,
    kGpuLostAtServe,
  };
  Kind kind = Kind::kNone;
  uint64_t step = 0;  // kGpuLostAtServe: the expert request's number (from 1)
  int stall_ms = 0;
  double slow_factor = 1.0;

  // The fault's kind when `at_step` is its step (then it is spent), else kNone.
  Kind FireAt(uint64_t at_step);
  // kGpuLostAtServe when `served` is its request number (then it is spent), else kNone.
  Kind FireAtServe(uint64_t served);
  // Whether it is a GPU fault (only a Vulkan worker can have one).
  bool on_gpu() const {
    return kind == Kind::kGpuLost || kind == Kind::kGpuOomAtLoad || kind == Kind::kGpuLostAtServe;
  }
};

// Parses SPEC (empty: no fault).
absl::StatusOr<Fault> ParseFault(const std::string& spec);

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_FAULT_INJECTION_H_
