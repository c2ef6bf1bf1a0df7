#include "auth/peer_gate.h"

#include "absl/strings/str_cat.h"
#include "auth/encoding.h"

namespace shardrun::auth {

PeerGate::PeerGate(std::shared_ptr<KeyAllowList> admitted, bool handshake_socket, WallClock clock)
    : admitted_(std::move(admitted)),
      handshake_socket_(handshake_socket),
      clock_(std::move(clock)) {}

absl::StatusOr<PeerStanding> PeerGate::Check(const std::optional<CurveKeyBytes>& peer_key,
                                             size_t frame_count, size_t first_frame_bytes) {
  if (peer_key && admitted_ && admitted_->Contains(*peer_key, clock_())) {
    return PeerStanding::kAdmitted;
  }
  const std::string who = peer_key ? Z85EncodeKey(*peer_key) : "without a transport key";
  if (!handshake_socket_) {
    ++dropped_;
    return absl::PermissionDeniedError(absl::StrCat("unauthenticated peer ", who));
  }
  if (frame_count != 1 || first_frame_bytes > kMaxHandshakeBytes) {
    ++dropped_;
    return absl::PermissionDeniedError(
        absl::StrCat("peer ", who, " is not admitted yet and sent ", frame_count,
                     " frame(s) of which the first has ", first_frame_bytes,
                     " bytes; only a handshake message is heard"));
  }
  return PeerStanding::kPending;
}

}  // namespace shardrun::auth
