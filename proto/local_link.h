// A same-host fast path beside a ZeroMQ PUSH/PULL pair: messages through shared memory.
//
// Between two processes on one host, a ZeroMQ hop wakes three threads (the sender's I/O
// thread, the receiver's I/O thread, the receiving thread); on a virtual machine each wake of
// a halted vCPU costs tens of microseconds, so the hop costs 120-200 us however small the
// message (bench/hop_bench). A local link writes the message's frames into a ring in shared
// memory and wakes the receiver only when it sleeps: one wake, or none when the receiver spins
// (proto/arrival_spin.h), and the tensors are read in place, never copied by a socket.
//
// The receiver (LocalInbox) listens on an abstract unix socket named in its address; a
// sender (LocalOutlet) connects, the inbox makes a ring for it (a memfd) and passes the file
// descriptor back over the connection, which then serves as the doorbell: one byte says
// "a message is in the ring" while the receiver sleeps. Only a peer of the same user id is
// given a ring. A connection that fails (another host, another network namespace, a peer
// gone) leaves the sender on its socket: the link is an optimisation, never a requirement.
//
// The inbox checks every record before handing out its frames (sizes against the ring, the
// frame count); a ring that breaks the format is dropped with its connection, and the sender
// falls back to its socket. Messages of one link arrive in order; between the link and the
// socket there is no order, which the runtime never needs (a sequence has one step in flight,
// and a stale one is recognised by its plan and step numbers).
#ifndef SHARDRUN_PROTO_LOCAL_LINK_H_
#define SHARDRUN_PROTO_LOCAL_LINK_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/message_codec.h"
#include "proto/shardrun.pb.h"
#include "zmq.hpp"

namespace shardrun {

// Bytes of each ring; one message may take at most half (larger ones go by the socket).
inline constexpr size_t kLocalRingBytes = size_t{8} << 20;

struct LocalRing;  // the shared-memory layout (local_link.cc)

class LocalInbox {
 public:
  // Listens under a fresh random name.
  static absl::StatusOr<std::unique_ptr<LocalInbox>> Create(size_t ring_bytes = kLocalRingBytes);
  ~LocalInbox();
  LocalInbox(const LocalInbox&) = delete;
  LocalInbox& operator=(const LocalInbox&) = delete;

  // "local:<name>": what senders connect to (within Hello.link_endpoint: proto/link.h).
  const std::string& address() const { return address_; }

  // The descriptors to poll for input: the listening socket and each sender's doorbell.
  void AppendPollItems(std::vector<zmq::pollitem_t>* items) const;

  // After a poll of the items AppendPollItems gave (`items`, in that order, with their
  // revents): accepts senders that connected, takes doorbell bytes, drops senders that closed
  // and whose rings are empty. No system call when nothing fired.
  void Service(std::span<const zmq::pollitem_t> items);

  // The next message's frames, pointing into its ring: valid until the next call. Returns
  // false when no message is waiting. A ring whose record breaks the format is dropped and
  // `*broken` says why (the caller counts a malformed message).
  bool Next(std::vector<Frame>* frames, absl::Status* broken);

  // Before sleeping in poll: asks every sender to ring the doorbell for its next message.
  // Returns false when a message is already waiting (then do not sleep). Awake() after the
  // poll withdraws the request.
  bool PrepareToSleep();
  void Awake();

  // Whether a message waits in some ring (memory reads only).
  bool HasMessage() const;

  int senders() const { return static_cast<int>(links_.size()); }

 private:
  struct Link;
  explicit LocalInbox(size_t ring_bytes);
  void Accept();
  // Releases the record handed out by the last Next.
  void ReleaseHeld();

  size_t ring_bytes_;
  int listen_fd_ = -1;
  std::string address_;
  std::vector<std::unique_ptr<Link>> links_;
  size_t next_link_ = 0;  // round robin between senders
  Link* held_ = nullptr;  // the link whose record the caller holds
  uint64_t held_end_ = 0;
};

class LocalOutlet {
 public:
  // Starts connecting to an inbox's `address` without waiting; until the ring arrives,
  // TrySend returns false. Fails only for an address that is not "local:...".
  static absl::StatusOr<std::unique_ptr<LocalOutlet>> Connect(const std::string& address);
  ~LocalOutlet();
  LocalOutlet(const LocalOutlet&) = delete;
  LocalOutlet& operator=(const LocalOutlet&) = delete;

  // Writes the frames into the ring and rings the doorbell if the receiver sleeps. False when
  // the link is not (or no longer) up (the receiver closed it or its process is gone), the
  // message is larger than half the ring, or the ring has no room now: the caller sends it by
  // its socket instead.
  bool TrySend(std::span<const Frame> frames);

  // Whether the ring has arrived (and the link not failed since).
  bool up() const { return ring_ != nullptr; }
  // Whether the link has failed for good (no inbox there, no ring given, the receiver gone).
  bool failed() const { return fd_ < 0; }
  // Whether the receiver this link reached has gone away since (its end of the connection
  // closed, as a process's does when it exits or is killed); then the link has failed too.
  bool ReceiverGone();
  bool receiver_gone() const { return receiver_gone_; }  // as last found

 private:
  LocalOutlet() = default;
  // Takes the ring's descriptor once the inbox has sent it.
  void TakeRing();
  void Fail(const std::string& why);

  int fd_ = -1;
  bool receiver_gone_ = false;
  LocalRing* ring_ = nullptr;
  size_t mapped_bytes_ = 0;
  uint64_t capacity_ = 0;  // of the ring's data, as it was handed over
  uint64_t head_ = 0;      // bytes written (only we write the ring's copy)
  std::string address_;
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_LOCAL_LINK_H_
