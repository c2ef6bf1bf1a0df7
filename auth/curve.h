// CurveZMQ on shardrun's sockets: encryption and mutual authentication of every connection.
// A server socket holds the process's Curve25519 key pair and has each client's key decided
// by the ZAP handler; a client socket must know the server's public key, so a peer without it
// cannot even complete the handshake.
#ifndef SHARDRUN_AUTH_CURVE_H_
#define SHARDRUN_AUTH_CURVE_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "auth/keys.h"
#include "auth/zap_handler.h"
#include "zmq.hpp"

namespace shardrun::auth {

// ZAP domain of sockets where not-yet-admitted peers may connect to present a token (the
// coordinator's hello socket): ZapHandler::AdmitAnyKeyInDomain(kHandshakeDomain).
inline constexpr char kHandshakeDomain[] = "shardrun-handshake";
// ZAP domain of every other server socket: listed keys only.
inline constexpr char kAdmittedDomain[] = "shardrun";

// Makes `socket` (before bind) a CURVE server with `server`'s keys whose clients `zap`
// decides under `zap_domain`. `zap` must serve the socket's context.
absl::Status ConfigureCurveServer(zmq::socket_t& socket, const CurveKeyPair& server,
                                  const ZapHandler& zap,
                                  std::string_view zap_domain = kAdmittedDomain);

// Makes `socket` (before connect) a CURVE client of the server whose public key is
// `server_key`, authenticating with `client`'s keys.
absl::Status ConfigureCurveClient(zmq::socket_t& socket, const CurveKeyPair& client,
                                  const CurveKeyBytes& server_key);

// The transport key of the peer that sent `message`, as the ZAP handler admitted it (its
// User-Id); none for a connection without CURVE.
std::optional<CurveKeyBytes> PeerCurveKey(const zmq::message_t& message);

// Whether `endpoint` ("tcp://127.0.0.1:5555", "ipc://...", "inproc://...") can only be reached
// from this host: loopback TCP addresses (127.0.0.0/8, [::1], localhost), ipc and inproc.
bool IsLoopbackEndpoint(std::string_view endpoint);

// The rule for listen addresses: CURVE is required on any address but loopback, unless the
// operator chose `insecure`. FailedPrecondition naming the address and the remedy otherwise.
absl::Status CheckListenSecurity(std::string_view endpoint, bool curve_configured, bool insecure);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_CURVE_H_
