// Keys, permission tokens and CurveZMQ in real clusters: a scoped worker of another origin
// holds only what its token allows and the answer equals the single process; every kind of bad
// token or proof is refused at hello with its own reason and nothing is placed; a worker
// without the coordinator's key cannot connect; the wire carries no plaintext with CURVE on;
// a token that expires mid-generation drains its worker without changing the answer; and a
// listen address off loopback needs keys or --insecure.
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "auth/encoding.h"
#include "auth/key_file.h"
#include "auth/keys.h"
#include "auth/proof.h"
#include "auth/scope.h"
#include "auth/token_codec.h"
#include "auth/token_issuer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/content_hash.h"
#include "proto/message_codec.h"
#include "proto/shardrun.pb.h"
#include "tests/tcp_relay.h"
#include "tests/test_util.h"
#include "zmq.hpp"

namespace shardrun {
namespace {

using ::shardrun::testing::BackgroundShardrun;
using ::shardrun::testing::CommandResult;
using ::shardrun::testing::FreePort;
using ::shardrun::testing::IdsAfter;
using ::shardrun::testing::MakeTempDir;
using ::shardrun::testing::ReadFile;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;
using ::shardrun::testing::TcpRelay;
using ::shardrun::testing::WaitForFileCondition;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kOwner[] = "https://owner.example";
constexpr char kGuest[] = "https://guest.example";
constexpr char kCluster[] = "cluster-1";
constexpr std::chrono::milliseconds kReplyTimeout(20000);

std::string Model() { return SharedPath("models/stories260K.bin"); }

std::vector<std::string> Generation(int n) {
  return {Model(),
          "-z",
          SharedPath("models/tok512.bin"),
          "-p",
          "Once upon a time",
          "--temp",
          "0",
          "-n",
          std::to_string(n),
          "--emit-ids"};
}

std::string Endpoint(int port) { return absl::StrCat("tcp://127.0.0.1:", port); }

std::string Ids(const std::string& log) {
  return absl::StrJoin(IdsAfter(log, "generated_ids"), ",");
}

std::string SingleProcessIds(int n) {
  std::vector<std::string> args = {"generate", "-t", "1"};
  for (const std::string& a : Generation(n)) args.push_back(a);
  const CommandResult r = RunShardrun(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return Ids(r.err);
}

// Waits until the workers "guest" and "same" have both loaded their shards (the generation
// is under way then).
bool BothLoaded(BackgroundShardrun& coordinator) {
  return WaitForFileCondition(coordinator.err_path(), 30000, [&] {
    return coordinator.err().find("worker guest loaded its shard") != std::string::npos &&
           coordinator.err().find("worker same loaded its shard") != std::string::npos;
  });
}

std::string Bytes(std::span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// An origin's keys, in memory and as a `shardrun keygen` directory.
struct Identity {
  auth::SignKeyPair sign;
  auth::CurveKeyPair curve;
  std::string dir;
};

Identity MakeIdentity(const std::string& origin, const std::string& dir) {
  Identity id{auth::GenerateSignKeyPair(origin), auth::GenerateCurveKeyPair(origin), dir};
  const absl::Status s = auth::WriteKeyDirectory(dir, id.sign, id.curve, /*overwrite=*/false);
  EXPECT_TRUE(s.ok()) << s;
  return id;
}

// The owner's keys, a guest's, the model's hash, and tokens the owner signs for the guest.
class AuthClusterTest : public ::testing::Test {
 protected:
  AuthClusterTest()
      : dir_(MakeTempDir()),
        owner_(MakeIdentity(kOwner, dir_ + "/owner")),
        guest_(MakeIdentity(kGuest, dir_ + "/guest")),
        model_hash_(HashBytes(auth::AsBytes(ReadFile(Model())))) {}

  auth::TokenRequest Request() const {
    auth::TokenRequest r;
    r.subject_origin = kGuest;
    r.subject_key = guest_.sign.public_key;
    r.audience = kCluster;
    r.model_hash = model_hash_;
    r.permissions.Add(auth::Permission::kHostShard);
    r.not_before = std::chrono::system_clock::now();
    r.ttl = std::chrono::hours(1);
    return r;
  }
  std::string Issue(const auth::TokenRequest& request,
                    const auth::SignKeyPair* issuer = nullptr) const {
    absl::StatusOr<std::string> token = auth::IssueToken(issuer ? *issuer : owner_.sign, request);
    EXPECT_TRUE(token.ok()) << token.status();
    return token.value_or("");
  }

  // `shardrun coordinator` with the owner's keys, trusting the owner, for `shards` workers.
  std::vector<std::string> CoordinatorArgs(int port, int shards, int n,
                                           std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {"coordinator",
                                     "--listen",
                                     Endpoint(port),
                                     "--shards",
                                     std::to_string(shards),
                                     "--key",
                                     owner_.dir,
                                     "--trust",
                                     owner_.dir + "/sign.pub",
                                     "--audience",
                                     kCluster};
    args.insert(args.end(), extra.begin(), extra.end());
    for (const std::string& a : Generation(n)) args.push_back(a);
    return args;
  }
  // `shardrun worker` with `identity`'s keys (and `token` when given).
  std::vector<std::string> WorkerArgs(int port, const std::string& id, const Identity& identity,
                                      const std::string& token = "") const {
    std::vector<std::string> args = {"worker",
                                     "--connect",
                                     Endpoint(port),
                                     "--id",
                                     id,
                                     "--model",
                                     Model(),
                                     "--key",
                                     identity.dir,
                                     "--server-key",
                                     owner_.dir + "/curve.pub"};
    if (!token.empty()) args.insert(args.end(), {"--token", token});
    return args;
  }

  std::string dir_;
  Identity owner_;
  Identity guest_;
  Sha256 model_hash_;
};

TEST_F(AuthClusterTest, ScopedGuestHoldsOnlyItsLayersAndTheAnswerIsUnchanged) {
  const int port = FreePort();
  BackgroundShardrun coordinator(CoordinatorArgs(port, 2, 40));
  // The owner's own worker (its key is the coordinator's: listed) and a guest allowed layers 3-4.
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  auth::TokenRequest request = Request();
  request.scope = *auth::ParseScope("layers=3-4");
  BackgroundShardrun guest(WorkerArgs(port, "guest", guest_, Issue(request)));
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(Ids(coordinator.err()), SingleProcessIds(40));
  EXPECT_EQ(guest.Wait(10000), 0) << guest.err();
  EXPECT_EQ(same.Wait(10000), 0) << same.err();
  EXPECT_THAT(guest.err(), HasSubstr("loaded layers 3..4 + head"));
  EXPECT_THAT(same.err(), HasSubstr("loaded embedding + layers 0..2"));
  EXPECT_THAT(coordinator.err(), HasSubstr("admitted peer guest: https://guest.example"));
}

TEST_F(AuthClusterTest, LocalClusterWithAKeyRunsOverCurve) {
  std::vector<std::string> args = {"--shards", "3", "--key", owner_.dir};
  for (const std::string& a : Generation(30)) args.push_back(a);
  const CommandResult r = RunShardrun(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Ids(r.err), SingleProcessIds(30));
  EXPECT_THAT(r.err, HasSubstr("CURVE on"));
}

// A peer speaking the handshake by hand, as a worker of the guest origin would (or a forger).
class HandshakeClient {
 public:
  HandshakeClient(zmq::context_t& context, const std::string& id, const auth::CurveKeyPair& keys,
                  const auth::CurveKeyBytes& server_key, int port)
      : socket_(context, zmq::socket_type::dealer), keys_(keys), server_key_(server_key) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::routing_id, id);
    socket_.set(zmq::sockopt::curve_serverkey, Bytes(server_key));
    socket_.set(zmq::sockopt::curve_publickey, Bytes(keys.public_key));
    socket_.set(zmq::sockopt::curve_secretkey, Bytes(keys.secret_key));
    socket_.connect(Endpoint(port));
    wire::Hello& hello = hello_;
    hello.set_protocol_version(wire::PROTOCOL_VERSION);
    hello.set_worker_id(id);
    hello.mutable_budget()->set_memory_bytes(int64_t{1} << 30);
    hello.mutable_budget()->set_threads(1);
    hello.mutable_capabilities()->set_pid(getpid());
    hello.mutable_capabilities()->set_host("handshake-test");
    hello.set_data_endpoint("tcp://127.0.0.1:1");
  }

  void Send(const wire::Envelope& envelope) {
    std::string bytes;
    ASSERT_TRUE(EncodeEnvelope(envelope, &bytes).ok());
    socket_.send(zmq::buffer(bytes));
  }
  std::optional<wire::Envelope> Receive() {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, kReplyTimeout) <= 0) return std::nullopt;
    zmq::message_t reply;
    if (!socket_.recv(reply)) return std::nullopt;
    wire::Envelope envelope;
    if (!envelope.ParseFromArray(reply.data(), static_cast<int>(reply.size()))) return std::nullopt;
    return envelope;
  }
  // Says hello; the challenge that answers it.
  wire::Challenge Hello() {
    wire::Envelope envelope;
    envelope.set_protocol_version(wire::PROTOCOL_VERSION);
    *envelope.mutable_hello() = hello_;
    Send(envelope);
    std::optional<wire::Envelope> reply = Receive();
    EXPECT_TRUE(reply && reply->has_challenge()) << (reply ? reply->DebugString() : "no reply");
    return reply && reply->has_challenge() ? reply->challenge() : wire::Challenge();
  }
  // `token`'s proof for `challenge`, signed by `signer` over `hello` (default: this one's).
  wire::Proof Proof(const wire::Challenge& challenge, const std::string& token,
                    const auth::SignKeyPair& signer,
                    const std::optional<wire::Hello>& hello = std::nullopt) const {
    auth::ProofContext context;
    context.nonce = challenge.nonce();
    context.hello_digest = auth::HelloDigest(hello.value_or(hello_));
    context.coordinator_origin = challenge.coordinator_origin();
    context.coordinator_curve_key = server_key_;
    context.peer_curve_key = keys_.public_key;
    context.token = token;
    const auth::Signature signature = signer.Sign(auth::AsBytes(auth::ProofTranscript(context)));
    wire::Proof proof;
    proof.set_token(token);
    proof.set_nonce(challenge.nonce());
    proof.set_curve_key(Bytes(keys_.public_key));
    proof.set_signature(Bytes(signature));
    return proof;
  }
  // An activation for the first stage with its hidden state (a tensor frame).
  void SendActivation() {
    wire::Envelope envelope;
    wire::Activation* a = StartActivation(&envelope);
    a->set_sequence_id(1);
    a->set_step(1);
    a->set_n_tokens(1);
    SetTensorFrame(wire::ACTIVATION_F32, 1, 64, a->mutable_hidden());
    std::string header;
    ASSERT_TRUE(EncodeEnvelope(envelope, &header).ok());
    const std::string hidden(64 * sizeof(float), '\x7f');
    socket_.send(zmq::buffer(header), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(hidden));
  }
  // Sends `proof`; the Welcome's refusal reason ("ACCEPTED" when it was accepted).
  std::string Answer(const wire::Proof& proof) {
    wire::Envelope envelope;
    envelope.set_protocol_version(wire::PROTOCOL_VERSION);
    *envelope.mutable_proof() = proof;
    Send(envelope);
    std::optional<wire::Envelope> reply = Receive();
    if (!reply || !reply->has_welcome()) return "no welcome";
    return reply->welcome().accepted() ? "ACCEPTED" : reply->welcome().reason();
  }

 private:
  zmq::socket_t socket_;
  auth::CurveKeyPair keys_;
  auth::CurveKeyBytes server_key_;
  wire::Hello hello_;
};

TEST_F(AuthClusterTest, EveryBadTokenOrProofIsRefusedWithItsReasonAndNothingIsPlaced) {
  const int port = FreePort();
  // One revoked token, listed before the coordinator starts.
  auth::TokenRequest revoked_request = Request();
  const std::string revoked = Issue(revoked_request);
  const std::string revocations = dir_ + "/revoked.txt";
  {
    std::ofstream out(revocations);
    out << auth::ParseToken(revoked)->claims.TokenIdHex() << "\n";
  }
  BackgroundShardrun coordinator(
      CoordinatorArgs(port, 1, 8, {"--revocations", revocations, "--register-timeout", "60"}));
  zmq::context_t context;

  struct Case {
    std::string name;
    std::string token;
    std::string reason;
  };
  std::vector<Case> cases;
  {
    auth::ParsedToken parsed = *auth::ParseToken(Issue(Request()));
    parsed.signature[10] ^= 1;
    cases.push_back({"bad signature", auth::EncodeToken(parsed.payload_bytes, parsed.signature),
                     "bad token signature"});
  }
  const auth::SignKeyPair rogue = auth::GenerateSignKeyPair(kOwner);
  cases.push_back({"untrusted issuer", Issue(Request(), &rogue), "is not trusted"});
  auth::TokenRequest r = Request();
  r.not_before -= std::chrono::hours(3);
  cases.push_back({"expired", Issue(r), "token expired at"});
  r = Request();
  r.not_before += std::chrono::hours(2);
  cases.push_back({"not yet valid", Issue(r), "token not valid until"});
  r = Request();
  r.audience = "another-cluster";
  cases.push_back({"wrong audience", Issue(r), "token is for audience"});
  r = Request();
  r.model_hash = HashBytes(auth::AsBytes(std::string("another model")));
  cases.push_back({"wrong model", Issue(r), "token is for model"});
  r = Request();
  r.scope = *auth::ParseScope("layers=10-12");  // the model has 5
  cases.push_back({"scope holds nothing", Issue(r), "scope holds nothing"});
  cases.push_back({"revoked", revoked, "is revoked"});

  int n = 0;
  for (const Case& c : cases) {
    HandshakeClient client(context, absl::StrCat("bad", n++), guest_.curve, owner_.curve.public_key,
                           port);
    const wire::Challenge challenge = client.Hello();
    EXPECT_THAT(client.Answer(client.Proof(challenge, c.token, guest_.sign)), HasSubstr(c.reason))
        << c.name;
    if (n == 1) {
      // Refused, it pushes an activation anyway: dropped unread (two frames: not a handshake).
      client.SendActivation();
      ASSERT_TRUE(WaitForFileCondition(coordinator.err_path(), 20000, [&] {
        return coordinator.err().find("unauthenticated 1)") != std::string::npos;
      })) << coordinator.err();
      EXPECT_THAT(coordinator.err(), HasSubstr("is not admitted yet and sent 2 frame(s)"));
    }
  }

  const std::string token = Issue(Request());
  {
    // A token stolen by someone who cannot sign with its subject key.
    HandshakeClient thief(context, "thief", auth::GenerateCurveKeyPair(kGuest),
                          owner_.curve.public_key, port);
    const auth::SignKeyPair thief_key = auth::GenerateSignKeyPair(kGuest);
    EXPECT_THAT(thief.Answer(thief.Proof(thief.Hello(), token, thief_key)),
                HasSubstr("proof signature does not verify with the token's subject key"));
  }
  {
    // A proof captured on one connection and replayed: its nonce was spent by its first use.
    HandshakeClient first(context, "replay", guest_.curve, owner_.curve.public_key, port);
    wire::Hello other_hello;
    other_hello.set_worker_id("someone else");
    const wire::Proof captured = first.Proof(first.Hello(), token, guest_.sign, other_hello);
    EXPECT_THAT(first.Answer(captured), HasSubstr("proof signature does not verify"));
    HandshakeClient again(context, "replay2", guest_.curve, owner_.curve.public_key, port);
    again.Hello();
    EXPECT_THAT(again.Answer(captured), HasSubstr("nonce already used: a replayed hello proof"));
  }
  // A real worker with a bad token exits non-zero, printing the reason.
  r = Request();
  r.not_before -= std::chrono::hours(3);
  const CommandResult worker = RunShardrun(WorkerArgs(port, "late", guest_, Issue(r)));
  EXPECT_EQ(worker.exit_code, 1);
  EXPECT_THAT(worker.err, HasSubstr("the coordinator refused this worker: permission token "
                                    "refused: token expired at"));

  // Nothing was placed on any of them: the owner's worker is the plan's only one.
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(same.Wait(10000), 0) << same.err();
  const std::string log = coordinator.err();
  EXPECT_THAT(log, HasSubstr("worker same registered"));
  EXPECT_THAT(log, Not(ContainsRegex("worker (bad[0-9]|thief|replay|replay2|late) registered")));
  EXPECT_THAT(log, ContainsRegex("refused peer late: token expired at"));
  EXPECT_THAT(log, HasSubstr("1 stage on 1 worker")) << log;
  EXPECT_EQ(Ids(log), SingleProcessIds(8));
}

TEST_F(AuthClusterTest, WorkerWithoutTheCoordinatorsKeyCannotConnect) {
  const int port = FreePort();
  BackgroundShardrun coordinator(CoordinatorArgs(port, 1, 8, {"--register-timeout", "60"}));
  // No CURVE at all.
  CommandResult r =
      RunShardrun({"worker", "--connect", Endpoint(port), "--id", "plain", "--model", Model()});
  EXPECT_EQ(r.exit_code, 1);
  // (Seen as a mechanism mismatch, or, when the coordinator hangs up first, as failures.)
  EXPECT_THAT(r.err, HasSubstr("this worker needs --key DIR and --server-key"));
  // CURVE with a server key that is not the coordinator's.
  std::vector<std::string> args = WorkerArgs(port, "wrong", guest_);
  args.back() = guest_.dir + "/curve.pub";
  r = RunShardrun(args);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is --server-key the coordinator's curve.pub?"));
  // The coordinator heard from neither, and serves a worker that has its key.
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_THAT(coordinator.err(), Not(HasSubstr("plain")));
  EXPECT_THAT(coordinator.err(), Not(HasSubstr("wrong")));
}

// Runs one worker through a relay that keeps what travelled between it and its coordinator.
std::string CaptureRun(const std::vector<std::string>& coordinator_args,
                       std::vector<std::string> worker_args, int port) {
  BackgroundShardrun coordinator(coordinator_args);
  TcpRelay relay(port);
  worker_args[2] = Endpoint(relay.port());  // --connect
  BackgroundShardrun worker(worker_args);
  EXPECT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(worker.Wait(10000), 0) << worker.err();
  EXPECT_FALSE(Ids(coordinator.err()).empty()) << coordinator.err();
  return relay.captured();
}

TEST_F(AuthClusterTest, NoPlaintextOnTheWireWithCurve) {
  // What an eavesdropper would look for: the worker's name, the model's hash (in every Assign),
  // the header of the logits tensors (the activations coming back) and their float bytes.
  const std::string marker = "relay-marker-worker";
  wire::TensorFrame logits;
  SetTensorFrame(wire::ACTIVATION_F32, 1, 512, &logits);
  const std::string logits_header = logits.SerializeAsString();
  const std::string hash = Bytes(model_hash_);
  int port = FreePort();
  std::vector<std::string> worker = WorkerArgs(port, marker, owner_);
  const std::string curve = CaptureRun(CoordinatorArgs(port, 1, 20), worker, port);
  EXPECT_GT(curve.size(), 20u * 2048u);  // 20 steps of 512 float logits went through
  EXPECT_THAT(curve, Not(HasSubstr(marker)));
  EXPECT_THAT(curve, Not(HasSubstr(hash)));
  EXPECT_THAT(curve, Not(HasSubstr(logits_header)));
  EXPECT_THAT(curve, HasSubstr("CURVE"));  // the ZMTP greeting names the mechanism

  // The same run without keys shows all of it, so the checks above can fail (by socket: a
  // link would take the logits off this connection).
  port = FreePort();
  std::vector<std::string> plain_coordinator = {
      "coordinator", "--listen", Endpoint(port), "--shards", "1", "--links", "none"};
  for (const std::string& a : Generation(20)) plain_coordinator.push_back(a);
  const std::string plain = CaptureRun(plain_coordinator,
                                       {"worker", "--connect", Endpoint(port), "--id", marker,
                                        "--model", Model(), "--links", "none"},
                                       port);
  EXPECT_THAT(plain, HasSubstr(marker));
  EXPECT_THAT(plain, HasSubstr(hash));
  EXPECT_THAT(plain, HasSubstr(logits_header));
}

TEST_F(AuthClusterTest, TokenExpiringMidGenerationDrainsItsWorkerAndTheAnswerIsUnchanged) {
  const int port = FreePort();
  const int n = 120;  // at 40 ms a step: about 5 s, well past the token
  BackgroundShardrun coordinator(CoordinatorArgs(port, 2, n, {"--no-rebalance"}));
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  // The guest's token lives 3 s; the guest takes 40 ms more over each step, so generation outlives
  // it.
  auth::TokenRequest request = Request();
  request.ttl = std::chrono::seconds(3);
  request.scope = *auth::ParseScope("layers=3-4");
  std::vector<std::string> guest_args = WorkerArgs(port, "guest", guest_, Issue(request));
  guest_args.insert(guest_args.end(), {"--inject", "slow@ms=40"});
  BackgroundShardrun guest(guest_args);
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(Ids(coordinator.err()), SingleProcessIds(n));
  EXPECT_THAT(coordinator.err(), HasSubstr("draining worker guest: its permission token expired"));
  EXPECT_THAT(coordinator.err(), HasSubstr("recovered in"));
  EXPECT_EQ(guest.Wait(10000), 0) << guest.err();
  EXPECT_THAT(guest.err(), HasSubstr("drained: its permission token expired"));
  EXPECT_EQ(same.Wait(10000), 0) << same.err();
}

TEST_F(AuthClusterTest, TokenRevokedMidGenerationDrainsItsWorkerAndTheAnswerIsUnchanged) {
  const int port = FreePort();
  const int n = 120;  // at 40 ms a step on the guest: about 5 s
  const std::string revocations = dir_ + "/revoked.txt";
  std::ofstream(revocations) << "# none yet\n";
  BackgroundShardrun coordinator(
      CoordinatorArgs(port, 2, n, {"--no-rebalance", "--revocations", revocations}));
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  const std::string token = Issue(Request());
  std::vector<std::string> guest_args = WorkerArgs(port, "guest", guest_, token);
  guest_args.insert(guest_args.end(), {"--inject", "slow@ms=40"});
  BackgroundShardrun guest(guest_args);
  // Revoked once both shards are loaded, while the answer is being generated.
  ASSERT_TRUE(BothLoaded(coordinator)) << coordinator.err();
  std::ofstream(revocations, std::ios::app) << auth::ParseToken(token)->claims.TokenIdHex() << "\n";
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(Ids(coordinator.err()), SingleProcessIds(n));
  EXPECT_THAT(coordinator.err(), HasSubstr("draining worker guest: token"));
  EXPECT_THAT(coordinator.err(), HasSubstr("is revoked"));
  EXPECT_THAT(coordinator.err(), HasSubstr("recovered in"));
  EXPECT_EQ(guest.Wait(10000), 0) << guest.err();
  EXPECT_EQ(same.Wait(10000), 0) << same.err();
}

// --allow-keys is re-read when it changes: a key added after the coordinator started is welcome
// without a token (and without a restart)...
TEST_F(AuthClusterTest, AKeyAddedToAllowKeysIsWelcomeWithoutARestart) {
  const int port = FreePort();
  const int n = 40;
  const std::string allowed = dir_ + "/allowed_added.txt";
  std::ofstream(allowed) << "# same-origin workers\n";
  BackgroundShardrun coordinator(CoordinatorArgs(port, 2, n, {"--allow-keys", allowed}));
  ASSERT_TRUE(WaitForFileCondition(coordinator.err_path(), 30000, [&] {
    return coordinator.err().find("CURVE on:") != std::string::npos;
  })) << coordinator.err();
  std::ofstream(allowed, std::ios::app) << guest_.curve.Public().Z85() << " " << kGuest << "\n";
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  BackgroundShardrun guest(WorkerArgs(port, "guest", guest_));  // no token
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(Ids(coordinator.err()), SingleProcessIds(n));
  EXPECT_THAT(coordinator.err(), HasSubstr("re-read, 1 key(s), 0 taken off"));
  EXPECT_THAT(coordinator.err(), HasSubstr("worker guest loaded its shard"));
  EXPECT_EQ(guest.Wait(10000), 0) << guest.err();
  EXPECT_EQ(same.Wait(10000), 0) << same.err();
}

// ... and a worker whose key is taken off it is drained mid-generation, its shard moved.
TEST_F(AuthClusterTest, AKeyTakenOffAllowKeysDrainsItsWorkerAndTheAnswerIsUnchanged) {
  const int port = FreePort();
  const int n = 120;  // at 40 ms a step on the guest: about 5 s
  const std::string allowed = dir_ + "/allowed_removed.txt";
  std::ofstream(allowed) << guest_.curve.Public().Z85() << " " << kGuest << "\n";
  BackgroundShardrun coordinator(
      CoordinatorArgs(port, 2, n, {"--no-rebalance", "--allow-keys", allowed}));
  BackgroundShardrun same(WorkerArgs(port, "same", owner_));
  std::vector<std::string> guest_args = WorkerArgs(port, "guest", guest_);  // no token
  guest_args.insert(guest_args.end(), {"--inject", "slow@ms=40"});
  BackgroundShardrun guest(guest_args);
  ASSERT_TRUE(BothLoaded(coordinator)) << coordinator.err();
  std::ofstream(allowed) << "# nobody now\n";
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(Ids(coordinator.err()), SingleProcessIds(n));
  EXPECT_THAT(coordinator.err(), HasSubstr("draining worker guest: its transport key"));
  EXPECT_THAT(coordinator.err(), HasSubstr("was taken off --allow-keys"));
  EXPECT_THAT(coordinator.err(), HasSubstr("recovered in"));
  EXPECT_EQ(guest.Wait(10000), 0) << guest.err();
  EXPECT_THAT(guest.err(), HasSubstr("drained: its transport key"));
  EXPECT_EQ(same.Wait(10000), 0) << same.err();
}

TEST_F(AuthClusterTest, ListeningOffLoopbackNeedsKeysOrInsecure) {
  const int port = FreePort();
  std::vector<std::string> args = {"coordinator", "--listen", absl::StrCat("tcp://0.0.0.0:", port),
                                   "--shards", "1"};
  for (const std::string& a : Generation(8)) args.push_back(a);
  const CommandResult refused = RunShardrun(args);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("(not loopback) needs CURVE"));
  EXPECT_THAT(refused.err, HasSubstr("--insecure"));

  args.push_back("--insecure");
  BackgroundShardrun coordinator(args);
  BackgroundShardrun worker(
      {"worker", "--connect", Endpoint(port), "--id", "w", "--model", Model()});
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(worker.Wait(10000), 0) << worker.err();
  EXPECT_THAT(coordinator.err(), HasSubstr("--insecure: peers are not authenticated"));
  EXPECT_EQ(Ids(coordinator.err()), SingleProcessIds(8));
}

}  // namespace
}  // namespace shardrun
