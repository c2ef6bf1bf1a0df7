// The check a receiving socket makes on each message before decoding any of it: is its
// sender (the transport key the connection authenticated with) admitted right now?
//
// Admitted peers are heard in full. On the hello socket a peer that is not admitted yet may
// send only what the handshake needs: one frame (Hello or Proof, no tensor frames) of at most
// kMaxHandshakeBytes; anything else from it, and everything from unknown peers on other
// sockets, is dropped and counted. Checking per message rather than per connection makes an
// expired or removed key lose its connection's voice at once.
#ifndef SHARDRUN_AUTH_PEER_GATE_H_
#define SHARDRUN_AUTH_PEER_GATE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "auth/clock.h"
#include "auth/key_allow_list.h"
#include "auth/keys.h"

namespace shardrun::auth {

inline constexpr size_t kMaxHandshakeBytes = 16 << 10;

enum class PeerStanding {
  kAdmitted,  // hear everything
  kPending,   // a handshake message: the caller accepts only Hello or Proof from it
};

class PeerGate {
 public:
  // `handshake_socket`: the coordinator's hello socket, where pending peers may speak.
  PeerGate(std::shared_ptr<KeyAllowList> admitted, bool handshake_socket,
           WallClock clock = SystemClock());

  // For a message of `frame_count` frames whose first is `first_frame_bytes` long, from the
  // peer with transport key `peer_key` (none: a connection without CURVE, never admitted).
  // PermissionDenied, counted, when it must be dropped.
  absl::StatusOr<PeerStanding> Check(const std::optional<CurveKeyBytes>& peer_key,
                                     size_t frame_count, size_t first_frame_bytes);

  uint64_t dropped() const { return dropped_; }

 private:
  std::shared_ptr<KeyAllowList> admitted_;
  bool handshake_socket_;
  WallClock clock_;
  uint64_t dropped_ = 0;
};

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_PEER_GATE_H_
