#include "worker/peer_security.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/curve.h"
#include "auth/peer_gate.h"

namespace shardrun {

absl::StatusOr<std::unique_ptr<PeerSecurity>> PeerSecurity::Start(
    zmq::context_t& context, auth::CurveKeyPair own, auth::CurveKeyBytes coordinator_key) {
  auto security = std::make_unique<PeerSecurity>();
  security->own_ = std::move(own);
  security->coordinator_key_ = coordinator_key;
  security->allowed_ = std::make_shared<auth::KeyAllowList>();
  auto zap = auth::ZapHandler::Start(context, security->allowed_);
  if (!zap.ok()) return zap.status();
  security->zap_ = *std::move(zap);
  return security;
}

absl::Status PeerSecurity::SecureServer(Channel& channel) const {
  if (!enabled()) return absl::OkStatus();
  if (absl::Status s = auth::ConfigureCurveServer(channel.socket(), own_, *zap_); !s.ok()) {
    return s;
  }
  auto gate = std::make_shared<auth::PeerGate>(allowed_, /*handshake_socket=*/false);
  channel.set_peer_filter(
      [gate](const zmq::message_t& first, size_t frames) -> absl::StatusOr<PeerAccess> {
        absl::StatusOr<auth::PeerStanding> standing =
            gate->Check(auth::PeerCurveKey(first), frames, first.size());
        if (!standing.ok()) return standing.status();
        return PeerAccess::kFull;
      });
  return absl::OkStatus();
}

absl::Status PeerSecurity::SecureCoordinatorClient(zmq::socket_t& socket) const {
  if (!enabled()) return absl::OkStatus();
  return auth::ConfigureCurveClient(socket, own_, coordinator_key_);
}

absl::Status PeerSecurity::SecurePeerClient(zmq::socket_t& socket, const std::string& server_key,
                                            const std::string& peer) const {
  if (!enabled()) return absl::OkStatus();
  if (server_key.size() != auth::kCurveKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the assignment names no transport key for ", peer,
                     " (this worker uses CURVE: is the coordinator running without --key?)"));
  }
  auth::CurveKeyBytes key;
  std::memcpy(key.data(), server_key.data(), key.size());
  return auth::ConfigureCurveClient(socket, own_, key);
}

absl::Status PeerSecurity::AllowPeers(const google::protobuf::RepeatedPtrField<std::string>& keys) {
  if (!enabled()) return absl::OkStatus();
  std::set<auth::CurveKeyBytes> wanted;
  for (const std::string& bytes : keys) {
    if (bytes.size() != auth::kCurveKeyBytes) {
      return absl::InvalidArgumentError("the assignment names a malformed peer transport key");
    }
    auth::CurveKeyBytes key;
    std::memcpy(key.data(), bytes.data(), key.size());
    wanted.insert(key);
  }
  // KeyAllowList has no listing: rebuild it by removing what the last plan allowed.
  for (const auth::CurveKeyBytes& key : allowed_now_) {
    if (!wanted.contains(key)) allowed_->Remove(key);
  }
  for (const auth::CurveKeyBytes& key : wanted) allowed_->Add(key, "plan peer");
  allowed_now_ = std::move(wanted);
  return absl::OkStatus();
}

}  // namespace shardrun
