// The ZeroMQ authentication handler (ZAP, RFC 27) of one zmq context: every CURVE handshake on
// a server socket of that context is decided here, on a thread of its own.
//
// A client key is admitted when the allow list holds it (the operator's keys and those
// admission proved with tokens), or, on sockets whose ZAP domain was opened with
// AdmitAnyKeyInDomain, whatever it is: that is how a peer of another origin reaches the
// coordinator's hello socket to present its token, where only handshake messages are heard
// from it until it is admitted (auth/peer_gate.h). Admitted connections carry the client's
// key in Z85 as their ZAP User-Id, which every received message reports (auth/curve.h
// PeerCurveKey). Other mechanisms (NULL, PLAIN) are refused. Refusals are counted.
//
// libzmq consults the handler only if it exists when a connection arrives, and accepts
// every CURVE client otherwise: start it before binding any CURVE server socket (the
// ConfigureCurveServer signature asks for it), and destroy it before the context.
#ifndef SHARDRUN_AUTH_ZAP_HANDLER_H_
#define SHARDRUN_AUTH_ZAP_HANDLER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "auth/clock.h"
#include "auth/key_allow_list.h"
#include "zmq.hpp"

namespace shardrun::auth {

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `context` (fails if another handler has) and serves it.
  static absl::StatusOr<std::unique_ptr<ZapHandler>> Start(zmq::context_t& context,
                                                           std::shared_ptr<KeyAllowList> allow_list,
                                                           WallClock clock = SystemClock());
  ~ZapHandler();  // stops and joins the thread
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Sockets with this ZAP domain (zmq::sockopt::zap_domain) admit any CURVE key.
  void AdmitAnyKeyInDomain(const std::string& domain);

  const std::shared_ptr<KeyAllowList>& allow_list() const { return allow_list_; }
  uint64_t admitted() const { return admitted_.load(); }
  uint64_t refused() const { return refused_.load(); }
  // Waits until at least `count` handshakes were refused, up to `timeout`; whether they were.
  bool WaitForRefusals(uint64_t count, std::chrono::milliseconds timeout);

 private:
  ZapHandler(zmq::context_t& context, std::shared_ptr<KeyAllowList> allow_list, WallClock clock);
  void Run();
  // One request: true to admit; fills the status text and user id of the reply.
  bool Decide(const std::vector<zmq::message_t>& request, std::string* status_text,
              std::string* user_id);

  std::shared_ptr<KeyAllowList> allow_list_;
  WallClock clock_;
  zmq::socket_t handler_;        // REP on inproc://zeromq.zap.01, used only by the thread
  zmq::socket_t stop_receiver_;  // PAIR, used only by the thread
  zmq::socket_t stop_sender_;    // PAIR, used only by the destructor
  std::thread thread_;

  std::mutex mutex_;
  std::set<std::string> open_domains_;
  std::condition_variable refused_changed_;
  std::atomic<uint64_t> admitted_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_ZAP_HANDLER_H_
