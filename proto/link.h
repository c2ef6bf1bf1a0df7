// Links: the fast paths beside a channel's ZeroMQ socket, through which the sending thread
// hands a message to the receiving loop without ZeroMQ's I/O threads in between.
//
// An inbox offers up to two ways in, named together in its address and tried by a sender in
// that order: shared memory for a sender on this host (proto/local_link.h: no system call for
// a spinning receiver) and a TCP connection of its own for any other (proto/tcp_link.h). A
// sender that can use neither (the inbox's host unreachable that way, a peer gone) sends by its
// socket; so does one whose message a link cannot take now (too big, no room). Links are never
// used with CURVE: they carry no transport identity to authenticate (the runtime's rule).
//
//   address:  "local:<name>,tcp:<host>:<port>"   (either part may be missing)
#ifndef SHARDRUN_PROTO_LINK_H_
#define SHARDRUN_PROTO_LINK_H_

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/local_link.h"
#include "proto/message_codec.h"
#include "proto/shardrun.pb.h"
#include "proto/tcp_link.h"
#include "zmq.hpp"

namespace shardrun {

// Which links a process offers and uses.
enum class LinkMode {
  kAuto,  // shared memory with peers on this host, TCP with the others
  kTcp,   // TCP with every peer (measures the cross-host path on one host)
  kNone,  // ZeroMQ sockets only
};

// "auto", "tcp" or "none".
absl::StatusOr<LinkMode> ParseLinkMode(const std::string& text);
const char* LinkModeName(LinkMode mode);

// How a message came in.
enum class LinkKind { kSocket, kSharedMemory, kTcp };

class LinkInbox {
 public:
  // Opens what `mode` offers: shared memory (kAuto) and, where `tcp_host` is not empty, a TCP
  // inbox reached at that host ("*": on every interface, reached at whatever host the sender
  // reached us by: see LinkAddressFor). Fails when nothing could be opened.
  static absl::StatusOr<std::unique_ptr<LinkInbox>> Open(LinkMode mode,
                                                         const std::string& tcp_host);

  const std::string& address() const { return address_; }

  // As LocalInbox's: the descriptors to poll, then serve them after the poll.
  void AppendPollItems(std::vector<zmq::pollitem_t>* items);
  void Service(std::span<const zmq::pollitem_t> items);

  // The next message's frames, valid until the next call (kind() says which link took it);
  // false when none waits. A link whose record breaks the format is dropped, `*broken` says why.
  bool Next(std::vector<Frame>* frames, absl::Status* broken);
  LinkKind kind() const { return kind_; }

  // Before sleeping in poll: false when a message already waits (then do not sleep); Awake()
  // after the poll.
  bool PrepareToSleep();
  void Awake();
  // Whether a message may be taken now (memory reads only).
  bool HasMessage() const;

  int senders() const;

 private:
  LinkInbox() = default;

  std::unique_ptr<LocalInbox> local_;
  std::unique_ptr<TcpInbox> tcp_;
  std::string address_;
  size_t local_items_ = 0;  // of the last AppendPollItems, the shared-memory inbox's
  LinkKind kind_ = LinkKind::kSocket;
  bool tcp_first_ = false;  // alternates which inbox Next reads first
};

class LinkOutlet {
 public:
  // Starts connecting to the inbox at `address` without waiting, by the links `mode` allows
  // (kTcp: not shared memory). Fails for an address that names no link it can parse, or none
  // that `mode` allows.
  static absl::StatusOr<std::unique_ptr<LinkOutlet>> Connect(const std::string& address,
                                                             LinkMode mode = LinkMode::kAuto);

  // Sends through the first way in that works; false when none can take the message now (the
  // caller sends it by socket).
  bool TrySend(std::span<const Frame> frames);

  // Whether some way in is up (taking a ring or a connection that has arrived meanwhile).
  bool up();
  // Whether the outlet has stopped changing: up, or with no way in left. Until then a caller
  // may call up() while idle, so that the first message does not pay for setting up the link
  // (mapping an 8 MiB ring takes about a millisecond).
  bool settled() { return up() || at_ >= alternatives_.size(); }
  // Whether the receiver this outlet reached has gone away since: its end of the link closed,
  // as a process's does when it exits or is killed (one system call; false while no link was
  // ever up, which tells nothing).
  bool ReceiverGone();
  // Which link the last successful TrySend used (kSocket before any).
  LinkKind kind() const { return kind_; }

 private:
  LinkOutlet() = default;
  // The current way in, advancing past those that failed; false when none is left.
  bool Current();

  std::vector<std::string> alternatives_;
  size_t at_ = 0;
  std::unique_ptr<LocalOutlet> local_;
  std::unique_ptr<TcpOutlet> tcp_;
  LinkKind kind_ = LinkKind::kSocket;
  bool receiver_gone_ = false;
};

// The host of a ZeroMQ endpoint "tcp://<host>:<port>" (an IPv6 host without its brackets); the
// rest of any other endpoint.
std::string EndpointHost(const std::string& endpoint);

// `address` with a wildcard TCP host ("tcp:*:<port>") replaced by `peer_host`, the host by
// which the sender reached that peer's ZeroMQ socket.
std::string LinkAddressFor(const std::string& address, const std::string& peer_host);

// Encodes `envelope` (into `header`, reused) and sends it with `tensors` through `outlet`;
// false when the link cannot take it now (the caller sends by socket).
bool SendByLink(LinkOutlet& outlet, const wire::Envelope& envelope,
                std::span<const std::span<const uint8_t>> tensors, std::string* header,
                std::vector<Frame>* frames);

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_LINK_H_
