#include "auth/curve.h"

#include <zmq.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/encoding.h"

namespace shardrun::auth {
namespace {

std::string_view KeyView(const CurveKeyBytes& key) {
  return {reinterpret_cast<const char*>(key.data()), key.size()};
}

bool CurveAvailable() { return zmq_has("curve") != 0; }

}  // namespace

absl::Status ConfigureCurveServer(zmq::socket_t& socket, const CurveKeyPair& server,
                                  const ZapHandler& zap, std::string_view zap_domain) {
  (void)zap;  // its existence is the point: without a handler libzmq admits every client
  if (!CurveAvailable()) return absl::UnimplementedError("this libzmq was built without CURVE");
  try {
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, KeyView(server.secret_key));
    socket.set(zmq::sockopt::zap_domain, zap_domain);
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot make a CURVE server socket: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status ConfigureCurveClient(zmq::socket_t& socket, const CurveKeyPair& client,
                                  const CurveKeyBytes& server_key) {
  if (!CurveAvailable()) return absl::UnimplementedError("this libzmq was built without CURVE");
  try {
    socket.set(zmq::sockopt::curve_serverkey, KeyView(server_key));
    socket.set(zmq::sockopt::curve_publickey, KeyView(client.public_key));
    socket.set(zmq::sockopt::curve_secretkey, KeyView(client.secret_key));
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot make a CURVE client socket: ", e.what()));
  }
  return absl::OkStatus();
}

std::optional<CurveKeyBytes> PeerCurveKey(const zmq::message_t& message) {
  const char* user_id = zmq_msg_gets(message.handle(), "User-Id");
  if (user_id == nullptr) return std::nullopt;
  absl::StatusOr<std::string> key = Z85DecodeKey(user_id);
  if (!key.ok()) return std::nullopt;
  CurveKeyBytes out;
  std::memcpy(out.data(), key->data(), out.size());
  return out;
}

bool IsLoopbackEndpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) {
    return true;
  }
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  if (host.starts_with("[")) {
    const size_t close = host.find(']');
    return close != std::string_view::npos && host.substr(1, close - 1) == "::1";
  }
  host = host.substr(0, host.rfind(':'));
  // ZeroMQ also takes interface names (tcp://eth0:5555); only these spellings are loopback.
  return host == "localhost" || host.starts_with("127.") || host == "lo";
}

absl::Status CheckListenSecurity(std::string_view endpoint, bool curve_configured, bool insecure) {
  if (curve_configured || insecure || IsLoopbackEndpoint(endpoint)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "listening on ", std::string(endpoint),
      " (not loopback) needs CURVE (a key pair from `shardrun keygen`), or --insecure to "
      "accept unauthenticated, unencrypted peers"));
}

}  // namespace shardrun::auth
