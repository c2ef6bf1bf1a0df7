// A direct TCP stream beside a ZeroMQ PUSH/PULL pair, for peers a shared-memory link cannot
// reach (another host, another network namespace).
//
// A ZeroMQ hop passes the message through two I/O threads besides the receiving loop: the
// sender's writes the socket, the receiver's reads it and queues the message for the loop. On
// a virtual machine each wake of a halted vCPU costs tens of microseconds, so the hop costs
// 120-200 us even on loopback (bench/hop_bench). A TCP link is one connection per sender that
// the sending thread writes and the receiving loop reads itself, without waiting: one wake
// when the receiver sleeps in poll, none when it spins (proto/arrival_spin.h).
//
// Messages keep the wire format (an envelope and raw tensor frames, decoded by the same codec
// checks) inside records laid out as proto/link_record.h says; tensors are read in place from
// the connection's buffer. The inbox checks every record: one that breaks the format, or a
// connection that ends inside a record, drops that connection (the sender then uses its socket).
//
// Like ZeroMQ without CURVE, a TCP link neither authenticates nor encrypts: it is only offered
// where the ZeroMQ sockets run without CURVE too (the runtime's rule), and hears no more than
// they would. A message larger than kTcpLinkMaxRecord goes by socket.
#ifndef SHARDRUN_PROTO_TCP_LINK_H_
#define SHARDRUN_PROTO_TCP_LINK_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/message_codec.h"
#include "zmq.hpp"

namespace shardrun {

// The largest record a TCP link carries (and so the most one sender's buffer grows to).
inline constexpr size_t kTcpLinkMaxRecord = size_t{4} << 20;
// Senders an inbox serves at once; more connections are refused.
inline constexpr int kTcpLinkMaxSenders = 256;
// A message up to this size is always tried on the link; a larger one only when the
// connection's send buffer has room for all of it now, so that a sender never waits on a busy
// receiver for a big message (a prompt's activations) that its socket would queue instead.
inline constexpr size_t kTcpLinkAlwaysTry = size_t{64} << 10;

class TcpInbox {
 public:
  // Listens on a fresh port of `host` (an IPv4 or IPv6 address or a name that resolves to
  // one): on loopback when `host` is loopback, on every interface otherwise, so that peers on
  // other hosts reach it at `host`. "*": on every interface, the address saying "tcp:*:<port>"
  // (a sender puts in the host it knows us by: proto/link.h's LinkAddressFor).
  static absl::StatusOr<std::unique_ptr<TcpInbox>> Listen(const std::string& host);
  ~TcpInbox();
  TcpInbox(const TcpInbox&) = delete;
  TcpInbox& operator=(const TcpInbox&) = delete;

  // "tcp:<host>:<port>" ("tcp:[<v6>]:<port>"): what senders connect to.
  const std::string& address() const { return address_; }

  // The descriptors to poll for input: the listening socket and each sender's connection.
  void AppendPollItems(std::vector<zmq::pollitem_t>* items) const;
  // After a poll of those items (in that order, with their revents): accepts senders and notes
  // which connections have bytes to read.
  void Service(std::span<const zmq::pollitem_t> items);

  // The next whole message's frames, pointing into its connection's buffer: valid until the
  // next call. Reads only connections that polled readable (or were not read to the end).
  // Returns false when no message is complete; a connection whose record breaks the format is
  // dropped and `*broken` says why.
  bool Next(std::vector<Frame>* frames, absl::Status* broken);

  // Whether a message may be taken without sleeping: a record already read whole, or a
  // connection polled readable and not read yet (memory reads only).
  bool HasMessage() const;

  int senders() const { return static_cast<int>(connections_.size()); }

 private:
  struct Connection;
  TcpInbox() = default;
  void Accept();
  void Drop(size_t index);

  int listen_fd_ = -1;
  std::string address_;
  std::vector<std::unique_ptr<Connection>> connections_;
  size_t next_ = 0;             // round robin between senders
  Connection* held_ = nullptr;  // whose record the caller holds
};

class TcpOutlet {
 public:
  // Starts connecting to an inbox's `address` ("tcp:<host>:<port>") without waiting; until
  // the connection is up, TrySend returns false. Fails only for an address it cannot parse or
  // resolve.
  static absl::StatusOr<std::unique_ptr<TcpOutlet>> Connect(const std::string& address);
  ~TcpOutlet();
  TcpOutlet(const TcpOutlet&) = delete;
  TcpOutlet& operator=(const TcpOutlet&) = delete;

  // Writes the frames as one record. False when the connection is not (or no longer) up, the
  // message is larger than kTcpLinkMaxRecord (or than kTcpLinkAlwaysTry and the room in the
  // send buffer), or the connection takes nothing now: the caller sends it by its socket. A record
  // once started is finished (waiting up to `finish_within` for the receiver to make room) or the
  // connection is closed, so that the receiver drops the part it got: a message is never delivered
  // twice or in part.
  bool TrySend(std::span<const Frame> frames,
               std::chrono::milliseconds finish_within = std::chrono::milliseconds(2000));

  // Whether the connection is up (checks a pending connect without waiting).
  bool up();
  // Whether the link has failed for good (never connected, or the receiver went away).
  bool failed() const { return fd_ < 0; }
  // Whether the receiver this link reached has gone away since (its end of the connection
  // closed, as a process's does when it exits or is killed); then the link has failed too.
  bool ReceiverGone();
  bool receiver_gone() const { return receiver_gone_; }  // as last found

 private:
  TcpOutlet() = default;
  void Fail(const std::string& why);

  int fd_ = -1;
  bool connected_ = false;
  bool receiver_gone_ = false;
  std::string address_;
  std::vector<uint8_t> header_;  // a record's header, reused
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_TCP_LINK_H_
