// A worker process: registers with the coordinator, loads the shard it is assigned and runs
// its slice of the forward pass on every activation that arrives, sending the result straight
// to the next stage (or the logits to the coordinator).
//
// One thread runs the event loop (control socket, data socket, timers); the backend's thread
// pool does the arithmetic. A worker whose coordinator goes silent exits, so a coordinator
// killed with SIGKILL never leaves workers behind.
#ifndef SHARDRUN_WORKER_WORKER_H_
#define SHARDRUN_WORKER_WORKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "kernels/backend_factory.h"
#include "proto/arrival_spin.h"
#include "proto/link.h"

namespace shardrun {

struct WorkerOptions {
  std::string connect;  // coordinator control endpoint, e.g. tcp://head:5555
  std::string id;       // unique worker id (default: host-pid)
  int64_t memory_bytes = int64_t{1} << 30;
  int threads = 1;
  BackendChoice backend = BackendChoice::kCpu;  // kAuto is resolved before RunWorker
  int vk_device = -1;                           // Vulkan device index, -1 = the best
  int64_t gpu_memory_bytes = 0;                 // GPU memory budget (Vulkan workers)
  std::string model_path;      // empty: no local model file; the shard's weights are streamed
  std::string cache_dir;       // streamed weights (empty: DefaultWeightCacheDir())
  std::string advertise_host;  // address peers use to reach this worker's data socket
  absl::Duration hello_retry = absl::Seconds(1);
  std::string inject;  // a fault to inflict on itself (worker/fault_injection.h); empty: none
  // When the coordinator goes silent (or a new one does not know it): drop the shard and wait
  // for a coordinator at `connect` instead of exiting.
  bool wait_coordinator = false;
  // How the loop awaits activations (proto/arrival_spin.h); kAuto spins around the predicted
  // arrival when the host has a core beyond `threads`.
  PollMode poll = PollMode::kAuto;
  // Which links (proto/link.h) carry activations, partial sums, expert messages and logits
  // beside the sockets: kAuto offers shared memory to peers on this host and a TCP link to the
  // others, and sends by whatever link the peer offers. Never with CURVE: a link carries no
  // transport identity to authenticate.
  LinkMode links = LinkMode::kAuto;
  // Keys and tokens (auth/). With `server_key_path` (the coordinator's curve.pub) every socket
  // uses CURVE with this worker's keys from `key_dir` (`shardrun keygen`); `token` (its text)
  // is what a worker of another origin proves when the coordinator asks. Without them, the
  // worker's sockets listen off loopback only with `insecure`.
  std::string key_dir;
  std::string server_key_path;
  std::string token;
  bool insecure = false;
};

// Runs until the coordinator says shutdown, goes silent, or `*stop` becomes true (signal).
// Returns OK on an orderly end.
absl::Status RunWorker(const WorkerOptions& options, const std::atomic<bool>* stop);

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_WORKER_H_
