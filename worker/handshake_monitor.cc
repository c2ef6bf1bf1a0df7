#include "worker/handshake_monitor.h"

#include <zmq.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shardrun {

absl::StatusOr<std::unique_ptr<HandshakeMonitor>> HandshakeMonitor::Start(zmq::context_t& context,
                                                                          zmq::socket_t& socket,
                                                                          bool curve) {
  std::unique_ptr<HandshakeMonitor> monitor(new HandshakeMonitor(context, socket, curve));
  static std::atomic<int> next{0};
  const std::string endpoint = absl::StrFormat("inproc://shardrun-handshake-monitor-%d", next++);
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot monitor the control socket: ", zmq_strerror(zmq_errno())));
  }
  try {
    monitor->events_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot monitor the control socket: ", e.what()));
  }
  return monitor;
}

HandshakeMonitor::HandshakeMonitor(zmq::context_t& context, zmq::socket_t& socket, bool curve)
    : socket_(socket), events_(context, zmq::socket_type::pair), curve_(curve) {
  events_.set(zmq::sockopt::linger, 0);
}

HandshakeMonitor::~HandshakeMonitor() { zmq_socket_monitor(socket_.handle(), nullptr, 0); }

std::optional<std::string> HandshakeMonitor::TakeFailure() {
  std::optional<std::string> failure;
  while (true) {
    zmq::message_t header, address;
    if (!events_.recv(header, zmq::recv_flags::dontwait)) break;
    if (!header.more() || !events_.recv(address, zmq::recv_flags::dontwait)) break;
    if (header.size() < 6) continue;
    uint16_t event = 0;
    uint32_t value = 0;
    std::memcpy(&event, header.data(), sizeof(event));
    std::memcpy(&value, static_cast<const char*>(header.data()) + 2, sizeof(value));
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      succeeded_ = true;
      failures_ = 0;
      continue;
    }
    ++failures_;
    if (failure) continue;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
        value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      failure = curve_ ? "the coordinator does not use CURVE (drop --key and --server-key, or "
                         "give the coordinator its --key)"
                       : "the coordinator uses CURVE: this worker needs --key DIR and "
                         "--server-key (the coordinator's curve.pub)";
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      failure = absl::StrCat("the coordinator refused this worker's transport key (ZAP status ",
                             value, ")");
    } else if (!succeeded_ && failures_ >= 3) {
      // A wrong server key shows as handshakes that fail without detail, again and again.
      failure = curve_ ? "the CURVE handshake with the coordinator keeps failing: is "
                         "--server-key the coordinator's curve.pub?"
                       : "the transport handshake with the coordinator keeps failing (if it "
                         "uses CURVE, this worker needs --key DIR and --server-key)";
    }
  }
  return failure;
}

}  // namespace shardrun
