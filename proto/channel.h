// A ZeroMQ socket that speaks the wire protocol: sends an envelope with its raw tensor frames
// and receives, decodes and checks whole messages.
//
// A malformed, oversized or unexpected message is counted in stats(), logged (rate-limited)
// and dropped; it never reaches the caller. The storage of the last message received is
// reused, so steady-state traffic allocates nothing.
//
// On authenticated sockets (CurveZMQ, auth/) a peer filter decides first, from the sender's
// transport identity alone, whether the message is heard at all: a message from a peer that
// is not admitted is dropped before any of it is decoded, tensors included.
#ifndef SHARDRUN_PROTO_CHANNEL_H_
#define SHARDRUN_PROTO_CHANNEL_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/envelope_arena.h"
#include "proto/link.h"
#include "proto/message_codec.h"
#include "proto/shardrun.pb.h"
#include "zmq.hpp"

namespace shardrun {

// How much of a peer's traffic a receiving socket hears.
enum class PeerAccess {
  kFull,
  // Only a handshake message (Hello or Proof): a peer of another origin that has not proved
  // its permission token yet.
  kHandshakeOnly,
};

// Decides, from a message's first frame (whose metadata carries the ZAP User-Id of the
// connection) and its frame count, whether its sender may be heard. A non-OK status drops the
// message undecoded, counted as unauthenticated.
using PeerFilter = std::function<absl::StatusOr<PeerAccess>(const zmq::message_t& first_frame,
                                                            size_t frame_count)>;

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

  // Valid until the next Receive (the envelope's storage is reused: proto/envelope_arena.h).
  const wire::Envelope& envelope() const { return received_.current(); }
  std::span<const std::span<const uint8_t>> tensors() const { return tensors_; }
  const std::string& sender() const { return sender_; }  // ROUTER only: the peer's routing id
  // The ZAP User-Id of the last message's connection (with CURVE, the peer's public key in
  // Z85); empty without authentication.
  const std::string& sender_user_id() const { return sender_user_id_; }
  // Whether the last message came through a link (not the socket), and which.
  bool last_from_link() const { return last_link_ != LinkKind::kSocket; }
  LinkKind last_link() const { return last_link_; }
  // Whether the last message came from a peer the filter heard only for its handshake.
  bool sender_handshake_only() const { return sender_access_ == PeerAccess::kHandshakeOnly; }

  // Connects to `endpoint` just before the first Send. A peer that authenticates connecting
  // clients (CURVE) learns whom to admit from its own plan, which may reach it after ours: by
  // the first message every worker has loaded its plan, so the handshake is never refused.
  void ConnectOnFirstSend(std::string endpoint) { pending_connect_ = std::move(endpoint); }

  // Installs the filter every received message passes before it is decoded (none: all are).
  void set_peer_filter(PeerFilter filter) { peer_filter_ = std::move(filter); }

  // ---- Links: the fast paths beside the socket (proto/link.h) ------------------------------
  // Messages that arrive through `inbox` are received as if by the socket (only on a channel
  // without a peer filter: a link carries no transport identity to check).
  void AttachInbox(std::unique_ptr<LinkInbox> inbox);
  // The same with an inbox of its own offering what `mode` allows (a TCP link reached at
  // `tcp_host`, where not empty); when none can be made, says why (the socket then carries
  // everything).
  void OpenInbox(LinkMode mode, const std::string& tcp_host);
  const LinkInbox* inbox() const { return inbox_.get(); }
  // Sends through the inbox at `address` (LinkInbox::address; empty: none) by the links
  // `mode` allows, whenever it can, by the socket otherwise.
  void LinkTo(const std::string& address, LinkMode mode);
  LinkOutlet* outlet() { return outlet_.get(); }
  // Whether the outlet's link is settled (LinkOutlet::settled; true without one).
  bool LinkSettled() { return outlet_ == nullptr || outlet_->settled(); }
  // Whether the peer this channel's link reached has gone away (LinkOutlet::ReceiverGone); false
  // without a link, which cannot tell.
  bool PeerGone() { return outlet_ != nullptr && outlet_->ReceiverGone(); }
  // For a caller that polls several channels: the socket, then the inbox's descriptors...
  void AppendPollItems(std::vector<zmq::pollitem_t>* items);
  // ...false when a message already waits in the inbox (then do not sleep in the poll)...
  bool PrepareToSleep() { return inbox_ == nullptr || inbox_->PrepareToSleep(); }
  // ...and after the poll, those items with their revents (serves the inbox).
  void Polled(std::span<const zmq::pollitem_t> items);
  // Whether a message may be taken from the inbox now (no system call: a spinning loop's check).
  bool HasLinkMessage() const { return inbox_ != nullptr && inbox_->HasMessage(); }

  // While waiting for a message that a long step (streaming weights) will have pushed out of
  // the caches: parses a copy of the last envelope received, so that the next message finds
  // the parser's code and data cached. Nothing until a message came.
  void WarmUp();

  // Counts a message the caller received but could not use in its current state.
  void DropUnexpected(const std::string& why);

  const MessageStats& stats() const { return stats_; }
  void set_limits(const DecodeLimits& limits) { limits_ = limits; }

 private:
  bool ReceiveOne();
  // Takes the next valid message from the inbox, if any.
  bool ReceiveLocal();
  // Counts and logs (rate-limited) a message dropped for `why`.
  void LogDrop(const absl::Status& why);

  zmq::socket_t socket_;
  zmq::socket_type type_;
  std::string name_;
  DecodeLimits limits_;
  MessageStats stats_;
  std::string header_;  // encode buffer, reused
  std::vector<zmq::message_t> parts_;
  std::vector<Frame> frames_;
  EnvelopeArena received_;   // the last message's envelope
  std::string last_header_;  // a copy of its envelope's bytes (WarmUp)
  EnvelopeArena warm_;       // WarmUp's scratch envelope
  std::vector<std::span<const uint8_t>> tensors_;
  std::string sender_;
  std::string sender_user_id_;
  PeerAccess sender_access_ = PeerAccess::kFull;
  LinkKind last_link_ = LinkKind::kSocket;
  PeerFilter peer_filter_;
  std::string pending_connect_;  // see ConnectOnFirstSend
  std::unique_ptr<LinkInbox> inbox_;
  std::unique_ptr<LinkOutlet> outlet_;
  std::vector<Frame> send_frames_;       // an outgoing message's frames, reused
  std::vector<zmq::pollitem_t> polled_;  // Receive's poll items, reused
  uint64_t drops_logged_ = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_CHANNEL_H_
