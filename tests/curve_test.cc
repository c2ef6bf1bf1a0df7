// CurveZMQ through the ZAP handler on real TCP sockets: who may connect, who is refused and
// counted, and that the bytes on the wire carry no plaintext with CURVE on.
#include "auth/curve.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "auth/key_allow_list.h"
#include "auth/keys.h"
#include "auth/peer_gate.h"
#include "auth/zap_handler.h"
#include "gtest/gtest.h"
#include "tests/tcp_relay.h"
#include "zmq.hpp"

namespace shardrun::auth {
namespace {

using ::shardrun::testing::TcpRelay;
using std::chrono::milliseconds;
constexpr milliseconds kTimeout(10000);

// Events of one socket, from libzmq's monitor (zmq_socket_monitor).
class SocketMonitor {
 public:
  SocketMonitor(zmq::context_t& context, zmq::socket_t& socket)
      : socket_(socket), pair_(context, zmq::socket_type::pair) {
    static std::atomic<int> next{0};
    const std::string endpoint = "inproc://curve-test-monitor-" + std::to_string(next++);
    EXPECT_EQ(zmq_socket_monitor(socket.handle(), endpoint.c_str(), ZMQ_EVENT_ALL), 0);
    pair_.set(zmq::sockopt::linger, 0);
    pair_.connect(endpoint);
  }
  ~SocketMonitor() { zmq_socket_monitor(socket_.handle(), nullptr, 0); }

  // Waits for `event` (ZMQ_EVENT_*) with `value` (any when negative), up to kTimeout;
  // whether it came.
  bool WaitFor(int event, int64_t value = -1) {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{pair_.handle(), 0, ZMQ_POLLIN, 0};
      const auto left =
          std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (zmq::poll(&item, 1, std::max(left, milliseconds(0))) <= 0) return false;
      zmq::message_t header, address;
      if (!pair_.recv(header) || !pair_.recv(address)) return false;
      uint16_t got = 0;
      uint32_t got_value = 0;
      std::memcpy(&got, header.data(), sizeof(got));
      std::memcpy(&got_value, static_cast<const char*>(header.data()) + 2, sizeof(got_value));
      if (got == event && (value < 0 || got_value == value)) return true;
    }
    return false;
  }

 private:
  zmq::socket_t& socket_;
  zmq::socket_t pair_;
};

// Receives one multipart message within kTimeout (empty when none came).
std::vector<zmq::message_t> Receive(zmq::socket_t& socket) {
  std::vector<zmq::message_t> parts;
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, kTimeout) <= 0) return parts;
  do {
    parts.emplace_back();
    if (!socket.recv(parts.back(), zmq::recv_flags::dontwait)) break;
  } while (parts.back().more());
  return parts;
}

// A context with a ZAP handler, a server key pair and a ROUTER server on a loopback port.
class CurveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    allow_ = std::make_shared<KeyAllowList>();
    absl::StatusOr<std::unique_ptr<ZapHandler>> zap = ZapHandler::Start(context_, allow_);
    ASSERT_TRUE(zap.ok()) << zap.status();
    zap_ = std::move(*zap);
  }
  void TearDown() override {
    sockets_.clear();  // every socket before the handler, the handler before the context
    zap_.reset();
  }

  zmq::socket_t& NewSocket(zmq::socket_type type) {
    sockets_.push_back(std::make_unique<zmq::socket_t>(context_, type));
    sockets_.back()->set(zmq::sockopt::linger, 0);
    return *sockets_.back();
  }

  // A ROUTER CURVE server in `domain`; returns its endpoint.
  std::string StartServer(zmq::socket_t& socket, const char* domain = kAdmittedDomain) {
    EXPECT_TRUE(ConfigureCurveServer(socket, server_, *zap_, domain).ok());
    socket.bind("tcp://127.0.0.1:*");
    return socket.get(zmq::sockopt::last_endpoint);
  }

  zmq::socket_t& Client(const CurveKeyPair& keys, const CurveKeyBytes& server_key,
                        const std::string& endpoint) {
    zmq::socket_t& s = NewSocket(zmq::socket_type::dealer);
    EXPECT_TRUE(ConfigureCurveClient(s, keys, server_key).ok());
    s.connect(endpoint);
    return s;
  }

  // Sends a sentinel from an allowed client and reads the server until it arrives; fails if
  // anything else arrives first (what a refused peer sent must never get through).
  void ExpectOnlySentinelArrives(zmq::socket_t& server, const std::string& endpoint) {
    const CurveKeyPair friendly = GenerateCurveKeyPair("https://friend.example");
    allow_->Add(friendly.public_key, friendly.origin);
    Client(friendly, server_.public_key, endpoint).send(zmq::str_buffer("sentinel"));
    std::vector<zmq::message_t> parts = Receive(server);
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[1].to_string(), "sentinel");
    EXPECT_EQ(PeerCurveKey(parts[1]), friendly.public_key);
  }

  zmq::context_t context_;
  std::shared_ptr<KeyAllowList> allow_;
  std::unique_ptr<ZapHandler> zap_;
  std::vector<std::unique_ptr<zmq::socket_t>> sockets_;
  const CurveKeyPair server_ = GenerateCurveKeyPair("https://owner.example");
};

TEST_F(CurveTest, AllowedKeyConnectsAndIsIdentified) {
  const CurveKeyPair worker = GenerateCurveKeyPair("https://worker.example");
  allow_->Add(worker.public_key, worker.origin);
  zmq::socket_t& server = NewSocket(zmq::socket_type::router);
  const std::string endpoint = StartServer(server);
  Client(worker, server_.public_key, endpoint).send(zmq::str_buffer("hello"));
  std::vector<zmq::message_t> parts = Receive(server);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[1].to_string(), "hello");
  EXPECT_EQ(PeerCurveKey(parts[1]), worker.public_key);
  EXPECT_GE(zap_->admitted(), 1u);
  EXPECT_EQ(zap_->refused(), 0u);
}

TEST_F(CurveTest, UnknownKeyIsRefusedAndCounted) {
  zmq::socket_t& server = NewSocket(zmq::socket_type::router);
  SocketMonitor monitor(context_, server);
  const std::string endpoint = StartServer(server);
  const CurveKeyPair stranger = GenerateCurveKeyPair("https://stranger.example");
  Client(stranger, server_.public_key, endpoint).send(zmq::str_buffer("intruder"));
  EXPECT_TRUE(monitor.WaitFor(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH));
  EXPECT_TRUE(zap_->WaitForRefusals(1, kTimeout));
  ExpectOnlySentinelArrives(server, endpoint);
}

TEST_F(CurveTest, ClientWithoutTheServerKeyCannotTalk) {
  zmq::socket_t& server = NewSocket(zmq::socket_type::router);
  SocketMonitor monitor(context_, server);
  const std::string endpoint = StartServer(server);
  const CurveKeyPair worker = GenerateCurveKeyPair("https://worker.example");
  allow_->Add(worker.public_key, worker.origin);  // even a listed key needs the server's key

  // A wrong server key: the server cannot open the client's handshake box.
  const CurveKeyBytes wrong = GenerateCurveKeyPair("https://owner.example").public_key;
  Client(worker, wrong, endpoint).send(zmq::str_buffer("intruder"));
  EXPECT_TRUE(
      monitor.WaitFor(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC));
  // No CURVE at all.
  zmq::socket_t& plain = NewSocket(zmq::socket_type::dealer);
  plain.connect(endpoint);
  plain.send(zmq::str_buffer("intruder"));
  EXPECT_TRUE(monitor.WaitFor(ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
                              ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH));
  ExpectOnlySentinelArrives(server, endpoint);
}

TEST_F(CurveTest, HandshakeDomainLetsStrangersInForAdmissionToExtendTheList) {
  zap_->AdmitAnyKeyInDomain(kHandshakeDomain);
  zmq::socket_t& hello_socket = NewSocket(zmq::socket_type::router);
  const std::string hello_endpoint = StartServer(hello_socket, kHandshakeDomain);
  zmq::socket_t& data_socket = NewSocket(zmq::socket_type::router);
  SocketMonitor data_monitor(context_, data_socket);
  const std::string data_endpoint = StartServer(data_socket);

  const CurveKeyPair stranger = GenerateCurveKeyPair("https://worker.example");
  Client(stranger, server_.public_key, hello_endpoint).send(zmq::str_buffer("Hello"));
  std::vector<zmq::message_t> parts = Receive(hello_socket);
  ASSERT_EQ(parts.size(), 2u);
  ASSERT_EQ(PeerCurveKey(parts[1]), stranger.public_key);
  PeerGate gate(allow_, /*handshake_socket=*/true);
  EXPECT_EQ(*gate.Check(PeerCurveKey(parts[1]), parts.size() - 1, parts[1].size()),
            PeerStanding::kPending);

  // Not admitted yet: the data socket refuses it.
  Client(stranger, server_.public_key, data_endpoint).send(zmq::str_buffer("early"));
  EXPECT_TRUE(data_monitor.WaitFor(ZMQ_EVENT_HANDSHAKE_FAILED_AUTH));

  // Admission proved its token: its key joins the list at run time.
  allow_->Add(stranger.public_key, stranger.origin);
  EXPECT_EQ(*gate.Check(stranger.public_key, 2, 100), PeerStanding::kAdmitted);
  Client(stranger, server_.public_key, data_endpoint).send(zmq::str_buffer("activation"));
  parts = Receive(data_socket);
  // The refused connection retries too and may get in now; either message proves admission.
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_TRUE(parts[1].to_string() == "activation" || parts[1].to_string() == "early");
  EXPECT_EQ(PeerCurveKey(parts[1]), stranger.public_key);
}

class WireTest : public CurveTest, public ::testing::WithParamInterface<bool> {};

TEST_P(WireTest, ActivationBytesAreOnTheWireOnlyWithoutCurve) {
  const bool curve = GetParam();
  const CurveKeyPair worker = GenerateCurveKeyPair("https://worker.example");
  allow_->Add(worker.public_key, worker.origin);
  zmq::socket_t& server = NewSocket(zmq::socket_type::pull);
  if (curve) {
    ASSERT_TRUE(ConfigureCurveServer(server, server_, *zap_).ok());
  }
  server.bind("tcp://127.0.0.1:*");
  const std::string endpoint = server.get(zmq::sockopt::last_endpoint);
  const int server_port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
  TcpRelay relay(server_port);

  zmq::socket_t& client = NewSocket(zmq::socket_type::push);
  if (curve) {
    ASSERT_TRUE(ConfigureCurveClient(client, worker, server_.public_key).ok());
  }
  client.connect("tcp://127.0.0.1:" + std::to_string(relay.port()));
  // A hidden state as a worker would send it: a recognisable marker among float bytes.
  const std::string marker = "PLAINTEXT-ACTIVATION-MARKER-7f3a";
  std::string activation = marker;
  for (int i = 0; i < 256; ++i) {
    const float v = 0.25f * static_cast<float>(i);
    activation.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  client.send(zmq::buffer(activation));
  std::vector<zmq::message_t> parts = Receive(server);
  ASSERT_EQ(parts.size(), 1u);
  EXPECT_EQ(parts[0].to_string(), activation);  // the receiver sees it either way
  // Every byte the server received went through the relay before it arrived.
  const std::string wire = relay.captured();
  EXPECT_GT(wire.size(), activation.size());
  EXPECT_EQ(wire.find(marker) != std::string::npos, !curve);
  EXPECT_EQ(wire.find(activation.substr(marker.size(), 64)) != std::string::npos, !curve);
}

INSTANTIATE_TEST_SUITE_P(Curve, WireTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("CurveOn") : std::string("CurveOff");
                         });

TEST(ListenSecurityTest, CurveRequiredOffLoopbackUnlessInsecure) {
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://127.0.0.1:5555"));
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://localhost:5555"));
  EXPECT_TRUE(IsLoopbackEndpoint("tcp://[::1]:5555"));
  EXPECT_TRUE(IsLoopbackEndpoint("ipc:///tmp/x"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://0.0.0.0:5555"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://*:5555"));
  EXPECT_FALSE(IsLoopbackEndpoint("tcp://10.1.2.3:5555"));
  EXPECT_TRUE(CheckListenSecurity("tcp://127.0.0.1:5555", false, false).ok());
  EXPECT_TRUE(CheckListenSecurity("tcp://0.0.0.0:5555", true, false).ok());
  EXPECT_TRUE(CheckListenSecurity("tcp://0.0.0.0:5555", false, true).ok());
  const absl::Status s = CheckListenSecurity("tcp://0.0.0.0:5555", false, false);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("not loopback"), absl::string_view::npos);
}

}  // namespace
}  // namespace shardrun::auth
