// CurveZMQ on a worker's sockets, when its cluster runs with keys (the worker was given the
// coordinator's public key, --server-key).
//
// The worker is a CURVE client of the coordinator and of every peer it sends to (the next
// stage, its tensor-parallel group, expert holders), each under the key the coordinator's
// Assign names for it; its own data, reduce and expert sockets are CURVE servers whose ZAP
// handler admits only the peers the current Assign names (inbound_curve_keys). Messages on
// those sockets from anyone else are dropped before they are decoded, and counted.
//
// Without keys every call here is a no-op and every peer is heard, as on a cluster without
// CURVE (loopback, or --insecure).
#ifndef SHARDRUN_WORKER_PEER_SECURITY_H_
#define SHARDRUN_WORKER_PEER_SECURITY_H_

#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "auth/key_allow_list.h"
#include "auth/keys.h"
#include "auth/zap_handler.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/channel.h"
#include "zmq.hpp"

namespace shardrun {

class PeerSecurity {
 public:
  // No CURVE.
  PeerSecurity() = default;
  // CURVE with `own` keys towards the coordinator whose key is `coordinator_key`. Starts the
  // ZAP handler of `context`, so it must come before any socket of the context binds; it must
  // be destroyed after those sockets and before the context.
  static absl::StatusOr<std::unique_ptr<PeerSecurity>> Start(zmq::context_t& context,
                                                             auth::CurveKeyPair own,
                                                             auth::CurveKeyBytes coordinator_key);

  bool enabled() const { return zap_ != nullptr; }
  const auth::CurveKeyPair& keys() const { return own_; }
  const auth::CurveKeyBytes& coordinator_key() const { return coordinator_key_; }

  // Before bind: a CURVE server that hears only admitted peers.
  absl::Status SecureServer(Channel& channel) const;
  // Before connect: a CURVE client of the coordinator.
  absl::Status SecureCoordinatorClient(zmq::socket_t& socket) const;
  // Before connect: a CURVE client of the peer whose key is `server_key` (Assign's bytes);
  // `peer` names it in errors.
  absl::Status SecurePeerClient(zmq::socket_t& socket, const std::string& server_key,
                                const std::string& peer) const;

  // The peers allowed to connect from now on (Assign.inbound_curve_keys): the previous plan's
  // peers lose their voice.
  absl::Status AllowPeers(const google::protobuf::RepeatedPtrField<std::string>& keys);

 private:
  auth::CurveKeyPair own_;
  auth::CurveKeyBytes coordinator_key_{};
  std::shared_ptr<auth::KeyAllowList> allowed_;
  std::set<auth::CurveKeyBytes> allowed_now_;  // what allowed_ holds
  std::unique_ptr<auth::ZapHandler> zap_;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_PEER_SECURITY_H_
