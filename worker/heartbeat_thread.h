// A worker's pulse, on a thread of its own.
//
// The worker's loop is busy for seconds at a time while it loads a shard (paging in, repacking)
// or runs a long prefill; a heartbeat sent from that loop would go quiet exactly then and get a
// healthy worker declared dead. This thread sends a Heartbeat every interval on its own DEALER
// socket (routing id "<worker id>#hb") whatever the loop is doing. A crashed, killed or stopped
// (SIGSTOP) process stops it too, which is what the coordinator must notice; a worker whose
// loop is stuck mid-step is caught by the coordinator's step deadline instead.
#ifndef SHARDRUN_WORKER_HEARTBEAT_THREAD_H_
#define SHARDRUN_WORKER_HEARTBEAT_THREAD_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "worker/peer_security.h"
#include "zmq.hpp"

namespace shardrun {

// The routing id of a worker's heartbeat socket.
std::string HeartbeatId(const std::string& worker_id);

class HeartbeatThread {
 public:
  // `security` (CURVE towards the coordinator, or none) must outlive the thread.
  HeartbeatThread(zmq::context_t& context, std::string connect, std::string worker_id,
                  absl::Duration interval, const PeerSecurity& security);
  ~HeartbeatThread();  // stops and joins

  // Mean compute time per step, reported with each beat.
  void set_step_time_us(int64_t us) { step_time_us_.store(us); }

 private:
  void Run();

  zmq::context_t& context_;
  const std::string connect_;
  const std::string worker_id_;
  const absl::Duration interval_;
  const PeerSecurity& security_;
  std::atomic<int64_t> step_time_us_{0};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_HEARTBEAT_THREAD_H_
