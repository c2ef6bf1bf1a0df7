// Watches the transport handshakes of a worker's control socket (zmq_socket_monitor). A
// coordinator that refuses them — CURVE on one side only, a wrong --server-key, a transport
// key it does not admit — would otherwise look like a silent coordinator, and the worker
// would wait out its timeout without saying why.
#ifndef SHARDRUN_WORKER_HANDSHAKE_MONITOR_H_
#define SHARDRUN_WORKER_HANDSHAKE_MONITOR_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "zmq.hpp"

namespace shardrun {

class HandshakeMonitor {
 public:
  // Monitors `socket` (of `context`), which uses CURVE when `curve`.
  static absl::StatusOr<std::unique_ptr<HandshakeMonitor>> Start(zmq::context_t& context,
                                                                 zmq::socket_t& socket, bool curve);
  ~HandshakeMonitor();

  // Reads the events so far without waiting. A failure that will not go away by retrying
  // (a mechanism mismatch, a refused key, or three failed handshakes before any succeeded)
  // is returned as its explanation, once.
  std::optional<std::string> TakeFailure();

 private:
  HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket, bool curve);

  zmq::socket_t& socket_;
  zmq::socket_t events_;  // PAIR connected to the monitor endpoint
  bool curve_;
  bool succeeded_ = false;
  int failures_ = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_HANDSHAKE_MONITOR_H_
