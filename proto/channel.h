// A ZeroMQ socket that speaks the wire protocol: sends an envelope with its raw tensor frames
// and receives, decodes and checks whole messages.
//
// A malformed, oversized or unexpected message is counted in stats(), logged (rate-limited)
// and dropped; it never reaches the caller. The storage of the last message received is
// reused, so steady-state traffic allocates nothing.
#ifndef SHARDRUN_PROTO_CHANNEL_H_
#define SHARDRUN_PROTO_CHANNEL_H_

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/message_codec.h"
#include "proto/shardrun.pb.h"
#include "zmq.hpp"

namespace shardrun {

class Channel {
 public:
  // `name` appears in log lines ("coordinator", "worker w1 data", ...).
  Channel(zmq::context_t& context, zmq::socket_type type, std::string name);

  zmq::socket_t& socket() { return socket_; }
  const std::string& name() const { return name_; }

  // Sends `envelope` followed by `tensors` as raw frames. A ROUTER socket addresses the peer
  // `to`; other sockets ignore it. Fails (never blocks) when the message cannot be queued.
  absl::Status Send(const wire::Envelope& envelope,
                    std::span<const std::span<const uint8_t>> tensors = {},
                    const std::string& to = "");

  // Waits up to `timeout` for a valid message. Returns true and fills the accessors below,
  // or false when none arrived in time (invalid messages are dropped and waiting goes on).
  bool Receive(std::chrono::milliseconds timeout);
  // Takes whatever message is queued without waiting.
  bool ReceiveNow() { return Receive(std::chrono::milliseconds(0)); }

  const wire::Envelope& envelope() const { return decoded_.envelope; }
  std::span<const std::span<const uint8_t>> tensors() const { return decoded_.tensors; }
  const std::string& sender() const { return sender_; }  // ROUTER only: the peer's routing id

  // Counts a message the caller received but could not use in its current state.
  void DropUnexpected(const std::string& why);

  const MessageStats& stats() const { return stats_; }
  void set_limits(const DecodeLimits& limits) { limits_ = limits; }

 private:
  bool ReceiveOne();

  zmq::socket_t socket_;
  zmq::socket_type type_;
  std::string name_;
  DecodeLimits limits_;
  MessageStats stats_;
  std::string header_;  // encode buffer, reused
  std::vector<zmq::message_t> parts_;
  std::vector<Frame> frames_;
  DecodedMessage decoded_;
  std::string sender_;
  uint64_t drops_logged_ = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_CHANNEL_H_
