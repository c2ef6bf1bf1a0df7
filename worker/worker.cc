#include "worker/worker.h"

#include <signal.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "auth/curve.h"
#include "auth/key_file.h"
#include "auth/proof.h"
#include "auth/token_codec.h"
#include "auth/token_verifier.h"
#include "kernels/cpu/cpu_level.h"
#include "kernels/device_failure.h"
#include "model/content_hash.h"
#include "model/model_file.h"
#include "proto/channel.h"
#include "proto/envelope_arena.h"
#include "proto/message_codec.h"
#include "spdlog/spdlog.h"
#include "worker/expert_client.h"
#include "worker/fault_injection.h"
#include "worker/handshake_monitor.h"
#include "worker/heartbeat_thread.h"
#include "worker/partial_sum_exchange.h"
#include "worker/peer_security.h"
#include "worker/shard_runtime.h"
#include "worker/weight_cache.h"
#include "worker/weight_receiver.h"

namespace shardrun {
namespace {

int64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

// The loop wakes at least this often for heartbeats and timeouts.
constexpr std::chrono::milliseconds kLongestPoll(50);

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "unknown";
  return name;
}

class WorkerLoop {
 public:
  WorkerLoop(const WorkerOptions& options, const std::atomic<bool>* stop)
      : options_(options),
        stop_(stop),
        control_(context_, zmq::socket_type::dealer, "worker " + options.id + " control"),
        data_in_(context_, zmq::socket_type::pull, "worker " + options.id + " data") {}

  absl::Status Run();

 private:
  absl::Status Setup();
  // Loads the keys and token and starts CURVE (before any socket binds), when configured.
  absl::Status SetupSecurity();
  void SendHello();
  // A worker of another origin: answers the coordinator's challenge with its token's proof.
  absl::Status HandleChallenge(const wire::Challenge& challenge);
  // --wait-coordinator: back to the state before registration, asking again.
  void ForgetCoordinator(const std::string& why);
  absl::Status HandleControl();
  // Which links messages to and from peers may take: as asked for, none with CURVE (a link
  // carries no transport identity to authenticate).
  LinkMode Links() const { return security_->enabled() ? LinkMode::kNone : options_.links; }
  // Whether every link to the next stage and to the coordinator is up or given up on.
  bool LinksSettled();
  void HandleActivation(Channel& in);
  absl::Status HandleAssign(const wire::Assign& assign);
  // A worker without the model file: asks for the ranges its cache lacks...
  absl::Status BeginStreamedLoad(const wire::Assign& assign);
  // ...writes each chunk that arrives...
  absl::Status HandleWeightChunk();
  // ...and loads the shard from the cached copy once every range is verified.
  absl::Status FinishStreamedLoad();
  absl::Status LoadShard(const wire::Assign& assign);
  void ReportLoadFailure(uint64_t plan_id, const absl::Status& status);
  // A device that failed (kernels/device_failure.h) cannot serve again: says Leaving, so that
  // the coordinator moves the shard elsewhere, and ends the loop with the failure.
  absl::Status LeaveForDeviceFailure(const absl::Status& failure);
  void SendToCoordinator(const wire::Envelope& envelope,
                         std::span<const std::span<const uint8_t>> tensors = {});
  void SendError(const std::string& message, uint64_t sequence_id);

  const WorkerOptions& options_;
  const std::atomic<bool>* stop_;
  zmq::context_t context_;
  // Before the channels: its ZAP handler outlives their sockets, the context outlives it.
  std::unique_ptr<PeerSecurity> security_;
  std::optional<auth::SignKeyPair> sign_key_;  // with a token: proves the token's subject key
  Channel control_;
  std::unique_ptr<HandshakeMonitor> handshakes_;  // of control_
  Channel data_in_;
  std::vector<std::unique_ptr<Channel>> next_;  // the next stage's members this worker feeds
  // The last stage: logits go by link where the coordinator offers one.
  std::unique_ptr<LinkOutlet> coordinator_link_;
  absl::Time links_settle_by_ = absl::InfinitePast();  // until when to await new links
  bool warmed_ = false;                         // the receive path warmed since the last activation
  std::string link_header_;                     // logits' encoded envelope, reused
  std::vector<Frame> link_frames_;              // and its frames
  std::unique_ptr<PartialSumExchange> reduce_;  // tensor parallelism: the stage's group
  std::unique_ptr<ExpertClient> experts_;       // expert plans: experts on other workers
  std::string data_endpoint_;
  std::unique_ptr<ModelFile> model_;
  Sha256 model_hash_{};
  std::unique_ptr<ShardRuntime> shard_;
  std::unique_ptr<WeightReceiver> receiver_;  // while streamed weights arrive
  bool welcomed_ = false;
  wire::Hello hello_;                      // the last Hello sent, which a proof is bound to
  bool proof_sent_ = false;                // answered a challenge: no more hellos until answered
  std::set<std::string> answered_nonces_;  // a challenge repeated for a repeated Hello
  bool done_ = false;
  absl::Status exit_status_;
  absl::Duration heartbeat_interval_ = absl::Milliseconds(500);
  absl::Duration coordinator_timeout_ = absl::Seconds(10);
  absl::Duration peer_timeout_ = absl::Seconds(2);  // partial sums, expert outputs
  absl::Time next_hello_ = absl::InfinitePast();
  Fault fault_;
  ArrivalSpin arrivals_{ResolvePollMode(options_.poll, options_.threads)};
  EnvelopeArena step_out_;  // the activation or logits of each step (HandleActivation)
  // The last step run for each sequence: a duplicated or replayed-too-late activation is dropped.
  std::map<uint64_t, uint64_t> last_step_;
  absl::Time last_heard_ = absl::Now();
  absl::Time last_sent_ = absl::InfinitePast();
  int64_t recent_step_us_ = 0;
  std::unique_ptr<HeartbeatThread> pulse_;   // while registered
  wire::Envelope out_;                       // reused for every message sent
  std::vector<zmq::pollitem_t> poll_items_;  // the loop's, reused
  std::vector<uint8_t> encoded_;             // encoded hidden state, reused
};

absl::Status WorkerLoop::SetupSecurity() {
  const bool curve = !options_.server_key_path.empty();
  if (!options_.token.empty() && !curve) {
    return absl::InvalidArgumentError(
        "--token needs --server-key (the coordinator's curve.pub): a token is proved to the "
        "coordinator over CURVE");
  }
  if (curve != !options_.key_dir.empty()) {
    return absl::InvalidArgumentError(
        "--key DIR (this worker's keys from `shardrun keygen`) and --server-key (the "
        "coordinator's curve.pub) go together: CURVE needs both");
  }
  if (!curve) {
    security_ = std::make_unique<PeerSecurity>();
    return absl::OkStatus();
  }
  const auth::KeyDirectory paths = auth::KeyPaths(options_.key_dir);
  auto server = auth::LoadCurvePublicKey(options_.server_key_path);
  if (!server.ok()) return server.status();
  auto own = auth::LoadCurveSecretKey(paths.curve_secret);
  if (!own.ok()) return own.status();
  if (!options_.token.empty()) {
    auto sign = auth::LoadSignSecretKey(paths.sign_secret);
    if (!sign.ok()) return sign.status();
    sign_key_ = *std::move(sign);
    auto token = auth::ParseToken(options_.token);
    if (!token.ok()) return token.status();
    spdlog::info("worker {}: permission token {} from {} ({}), expires {}", options_.id,
                 token->claims.TokenIdHex(), token->claims.issuer_origin,
                 token->claims.scope.ToString(), auth::FormatUnixTime(token->claims.expires_at));
  }
  auto security = PeerSecurity::Start(context_, *std::move(own), server->key);
  if (!security.ok()) return security.status();
  security_ = *std::move(security);
  spdlog::info("worker {}: CURVE on, transport key {}", options_.id,
               security_->keys().Public().Z85());
  return absl::OkStatus();
}

absl::Status WorkerLoop::Setup() {
  auto fault = ParseFault(options_.inject);
  if (!fault.ok()) return fault.status();
  fault_ = *fault;
  if (fault_.on_gpu() && options_.backend != BackendChoice::kVulkan) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--inject ", options_.inject, ": a GPU fault needs a Vulkan worker (--backend vulkan); ",
        "this one runs the ", std::string(BackendChoiceName(options_.backend)), " backend"));
  }
  if (absl::Status s = SetupSecurity(); !s.ok()) return s;
  if (!options_.model_path.empty()) {
    auto model = ModelFile::Open(options_.model_path);
    if (!model.ok()) return model.status();
    model_ = *std::move(model);
    const absl::Time t0 = absl::Now();
    model_hash_ = HashBytes(model_->bytes());
    spdlog::debug("{}: sha256 {} ({:.0f} ms)", options_.model_path, ShortDigest(model_hash_),
                  absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  // The data socket listens where the coordinator can tell the previous stage to connect.
  std::string host = options_.advertise_host;
  if (host.empty()) host = EndpointHost(options_.connect);
  const bool loopback = host == "127.0.0.1" || host == "localhost" || host == "::1";
  const std::string bind = loopback ? "tcp://127.0.0.1:0" : "tcp://0.0.0.0:0";
  if (absl::Status s = auth::CheckListenSecurity(bind, security_->enabled(), options_.insecure);
      !s.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(s.message(), " (a worker: --key DIR and --server-key FILE)"));
  }
  if (options_.insecure) {
    spdlog::warn("worker {}: --insecure: {}", options_.id,
                 security_->enabled() ? "has no effect with CURVE on"
                                      : "peers are not authenticated and traffic is not encrypted");
  }
  if (absl::Status s = security_->SecureServer(data_in_); !s.ok()) return s;
  if (absl::Status s = security_->SecureCoordinatorClient(control_.socket()); !s.ok()) return s;
  auto handshakes = HandshakeMonitor::Start(context_, control_.socket(), security_->enabled());
  if (!handshakes.ok()) return handshakes.status();
  handshakes_ = *std::move(handshakes);
  try {
    data_in_.socket().bind(bind);
    std::string bound = data_in_.socket().get(zmq::sockopt::last_endpoint);
    const std::string port = bound.substr(bound.rfind(':') + 1);
    if (!loopback && options_.advertise_host.empty()) {
      return absl::InvalidArgumentError(
          "--advertise HOST is required when the coordinator is not on this host (the address "
          "other workers use to reach this one)");
    }
    const bool v6 = !loopback && host.find(':') != std::string::npos;
    data_endpoint_ = absl::StrCat("tcp://", v6 ? "[" : "", loopback ? "127.0.0.1" : host,
                                  v6 ? "]" : "", ":", port);
    spdlog::info("worker {}: activations arrive at {}", options_.id, data_endpoint_);
    // Predecessors send by link: one wake per hop instead of three, none for a spinning loop.
    data_in_.OpenInbox(Links(), loopback ? "127.0.0.1" : host);
    auto reduce = PartialSumExchange::Create(context_, "worker " + options_.id, bind,
                                             loopback ? "" : host, *security_, options_.links);
    if (!reduce.ok()) return reduce.status();
    reduce_ = *std::move(reduce);
    auto experts = ExpertClient::Create(context_, "worker " + options_.id, bind,
                                        loopback ? "" : host, *security_, options_.links);
    if (!experts.ok()) return experts.status();
    experts_ = *std::move(experts);
    experts_->set_before_serve([this](uint64_t request) {
      if (fault_.FireAtServe(request) == Fault::Kind::kNone || shard_ == nullptr) return;
      spdlog::warn("worker {}: injected GPU loss before expert request {}", options_.id, request);
      if (absl::Status s = shard_->InjectDeviceFault(DeviceFault::kLost); !s.ok()) {
        spdlog::error("worker {}: {}", options_.id, std::string(s.message()));
      }
    });
    control_.socket().set(zmq::sockopt::routing_id, options_.id);
    control_.socket().connect(options_.connect);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot open sockets: ", e.what()));
  }
  return absl::OkStatus();
}

void WorkerLoop::SendHello() {
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Hello* hello = out_.mutable_hello();
  hello->set_protocol_version(wire::PROTOCOL_VERSION);
  hello->set_worker_id(options_.id);
  hello->mutable_budget()->set_memory_bytes(options_.memory_bytes);
  hello->mutable_budget()->set_threads(options_.threads);
  const bool vulkan = options_.backend == BackendChoice::kVulkan;
  hello->mutable_budget()->set_backend(vulkan ? wire::BACKEND_VULKAN : wire::BACKEND_CPU);
  if (vulkan) hello->mutable_budget()->set_gpu_memory_bytes(options_.gpu_memory_bytes);
  wire::Capabilities* caps = hello->mutable_capabilities();
  caps->set_simd_level(std::string(CpuLevelName(BestCpuLevel())));
  caps->set_cores(static_cast<int32_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  caps->set_host(HostName());
  caps->set_pid(getpid());
  caps->set_has_model_file(!options_.model_path.empty());
  if (!options_.model_path.empty()) hello->set_model_hash(model_hash_.data(), model_hash_.size());
  hello->set_data_endpoint(data_endpoint_);
  if (data_in_.inbox() != nullptr) hello->set_link_endpoint(data_in_.inbox()->address());
  hello->set_reduce_link_endpoint(reduce_->link_endpoint());
  hello->set_expert_link_endpoint(experts_->link_endpoint());
  hello->set_reduce_endpoint(reduce_->endpoint());
  hello->set_expert_endpoint(experts_->endpoint());
  hello_ = *hello;
  SendToCoordinator(out_);
}

absl::Status WorkerLoop::HandleChallenge(const wire::Challenge& challenge) {
  if (welcomed_ || answered_nonces_.contains(challenge.nonce())) {
    control_.DropUnexpected("a challenge already answered");
    return absl::OkStatus();
  }
  if (!sign_key_) {
    return absl::PermissionDeniedError(
        absl::StrCat("the coordinator asks for a permission token: this worker's transport key ",
                     security_->keys().Public().Z85(),
                     " is not on its --allow-keys list; pass --token from the model owner"));
  }
  absl::StatusOr<wire::Proof> proof =
      auth::MakeProof(challenge, auth::HelloDigest(hello_), options_.token, *sign_key_,
                      security_->coordinator_key(), security_->keys().public_key);
  if (!proof.ok()) return proof.status();
  answered_nonces_.insert(challenge.nonce());
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  out_.mutable_proof()->Swap(&*proof);
  SendToCoordinator(out_);
  proof_sent_ = true;
  spdlog::info("worker {}: presented its permission token to {}", options_.id,
               challenge.coordinator_origin());
  return absl::OkStatus();
}

void WorkerLoop::ForgetCoordinator(const std::string& why) {
  spdlog::warn("worker {}: {}; dropping the shard and waiting for a coordinator at {}", options_.id,
               why, options_.connect);
  shard_.reset();
  receiver_.reset();
  last_step_.clear();
  pulse_.reset();
  welcomed_ = false;
  proof_sent_ = false;
  next_hello_ = absl::InfinitePast();
  SendHello();
}

void WorkerLoop::SendToCoordinator(const wire::Envelope& envelope,
                                   std::span<const std::span<const uint8_t>> tensors) {
  if (absl::Status s = control_.Send(envelope, tensors); !s.ok()) {
    spdlog::warn("{}", std::string(s.message()));
  }
  last_sent_ = absl::Now();
}

void WorkerLoop::SendError(const std::string& message, uint64_t sequence_id) {
  spdlog::error("worker {}: {}", options_.id, message);
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  out_.mutable_error()->set_message(message);
  out_.mutable_error()->set_sequence_id(sequence_id);
  if (shard_ != nullptr) out_.mutable_error()->set_plan_id(shard_->assign().plan_id());
  SendToCoordinator(out_);
}

void WorkerLoop::ReportLoadFailure(uint64_t plan_id, const absl::Status& status) {
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  out_.mutable_load_progress()->set_plan_id(plan_id);
  out_.mutable_load_progress()->set_error(std::string(status.message()));
  SendToCoordinator(out_);
  spdlog::error("worker {}: loading failed: {}", options_.id, std::string(status.message()));
}

absl::Status WorkerLoop::LeaveForDeviceFailure(const absl::Status& failure) {
  const std::string device = FailedDeviceName(failure);
  const std::string reason =
      absl::StrCat("GPU ", device.empty() ? "" : device + " ", "failed: ", failure.message());
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  out_.mutable_leaving()->set_reason(reason);
  // The socket drops what is unsent when it closes: give the Leaving time to go out.
  control_.socket().set(zmq::sockopt::linger, 1000);
  SendToCoordinator(out_);
  done_ = true;
  exit_status_ = absl::Status(failure.code(), absl::StrCat(reason, "; left the cluster"));
  return exit_status_;
}

absl::Status WorkerLoop::HandleAssign(const wire::Assign& assign) {
  shard_.reset();
  receiver_.reset();
  // The new plan's peers may connect from now on, and only they.
  if (absl::Status s = security_->AllowPeers(assign.inbound_curve_keys()); !s.ok()) return s;
  if (options_.model_path.empty()) return BeginStreamedLoad(assign);
  if (assign.model_hash() != std::string(model_hash_.begin(), model_hash_.end())) {
    return absl::FailedPreconditionError("the assignment is for another model file");
  }
  return LoadShard(assign);
}

absl::Status WorkerLoop::BeginStreamedLoad(const wire::Assign& assign) {
  model_.reset();  // a copy from an earlier assignment; the cache reopens it
  const std::string dir = options_.cache_dir.empty() ? DefaultWeightCacheDir() : options_.cache_dir;
  auto receiver = WeightReceiver::Begin(assign, dir);
  if (!receiver.ok()) return receiver.status();
  receiver_ = *std::move(receiver);
  const std::vector<std::string>& missing = receiver_->missing();
  if (missing.empty()) {
    spdlog::info("worker {}: all {} weight ranges are cached in {}; nothing to fetch", options_.id,
                 assign.ranges_size(), dir);
  } else {
    spdlog::info("worker {}: fetching {} of {} weight ranges ({} bytes) into {}", options_.id,
                 missing.size(), assign.ranges_size(), receiver_->bytes_total(), dir);
  }
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::FetchWeights* fetch = out_.mutable_fetch_weights();
  fetch->set_plan_id(assign.plan_id());
  fetch->mutable_ranges()->Add(missing.begin(), missing.end());
  SendToCoordinator(out_);
  if (receiver_->complete()) return FinishStreamedLoad();
  return absl::OkStatus();
}

absl::Status WorkerLoop::HandleWeightChunk() {
  const wire::WeightChunk& chunk = control_.envelope().weight_chunk();
  if (receiver_ == nullptr || chunk.plan_id() != receiver_->assign().plan_id()) {
    control_.DropUnexpected("weight chunk while no streamed load is under way");
    return absl::OkStatus();
  }
  if (absl::Status s = receiver_->Receive(chunk, control_.tensors()[0]); !s.ok()) return s;
  // Every chunk is acknowledged: the coordinator sends only a window ahead of this.
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::LoadProgress* p = out_.mutable_load_progress();
  p->set_plan_id(chunk.plan_id());
  p->set_bytes_done(receiver_->bytes_done());
  p->set_bytes_total(receiver_->bytes_total());
  SendToCoordinator(out_);
  if (receiver_->complete()) return FinishStreamedLoad();
  return absl::OkStatus();
}

absl::Status WorkerLoop::FinishStreamedLoad() {
  auto model = receiver_->Finish();
  const wire::Assign assign = receiver_->assign();
  receiver_.reset();
  if (!model.ok()) return model.status();
  model_ = *std::move(model);
  return LoadShard(assign);
}

absl::Status WorkerLoop::LoadShard(const wire::Assign& assign) {
  absl::Time last_report = absl::InfinitePast();
  auto report = [&](int64_t done, int64_t total) {
    if (done < total && absl::Now() - last_report < absl::Milliseconds(200)) return;
    last_report = absl::Now();
    out_.Clear();
    out_.set_protocol_version(wire::PROTOCOL_VERSION);
    wire::LoadProgress* p = out_.mutable_load_progress();
    p->set_plan_id(assign.plan_id());
    p->set_bytes_done(done);
    p->set_bytes_total(total);
    SendToCoordinator(out_);
  };
  // A peer that stays silent this long mid-reduction fails the step.
  if (fault_.kind == Fault::Kind::kKillAtLoad) raise(SIGKILL);
  last_step_.clear();
  if (absl::Status s = reduce_->Configure(assign, model_->config().dim, peer_timeout_); !s.ok()) {
    return s;
  }
  const DeviceFault fault =
      fault_.kind == Fault::Kind::kGpuOomAtLoad ? DeviceFault::kOutOfMemory : DeviceFault::kNone;
  auto shard = ShardRuntime::Load(*model_, assign,
                                  {options_.backend, options_.threads, options_.vk_device, fault},
                                  reduce_.get(), experts_.get(), report);
  if (!shard.ok()) return shard.status();
  shard_ = *std::move(shard);
  if (absl::Status s =
          experts_->Configure(assign, shard_->expert_bank(), model_->config().dim, peer_timeout_);
      !s.ok()) {
    return s;
  }
  next_.clear();
  for (int i = 0; i < assign.next_endpoints_size(); ++i) {
    const std::string& endpoint = assign.next_endpoints(i);
    auto channel = std::make_unique<Channel>(context_, zmq::socket_type::push,
                                             "worker " + options_.id + " -> " + endpoint);
    if (absl::Status s = security_->SecurePeerClient(
            channel->socket(), i < assign.next_curve_keys_size() ? assign.next_curve_keys(i) : "",
            "the next stage at " + endpoint);
        !s.ok()) {
      return s;
    }
    // Not before the first activation: by then the next stage admits this worker's key.
    channel->ConnectOnFirstSend(endpoint);
    if (Links() != LinkMode::kNone && i < assign.next_link_endpoints_size()) {
      // Made now, up by the first activation (the next stage's loop hands over the ring).
      channel->LinkTo(assign.next_link_endpoints(i), Links());
    }
    next_.push_back(std::move(channel));
  }
  coordinator_link_.reset();
  if (shard_->slice().head && !assign.coordinator_link_endpoint().empty() &&
      Links() != LinkMode::kNone) {
    // A coordinator listening on every interface names no host: the one we reached it at.
    absl::StatusOr<std::unique_ptr<LinkOutlet>> outlet = LinkOutlet::Connect(
        LinkAddressFor(assign.coordinator_link_endpoint(), EndpointHost(options_.connect)),
        Links());
    if (outlet.ok()) coordinator_link_ = *std::move(outlet);
  }
  links_settle_by_ = absl::Now() + absl::Seconds(2);
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  out_.mutable_load_progress()->set_plan_id(assign.plan_id());
  out_.mutable_load_progress()->set_done(true);
  SendToCoordinator(out_);
  spdlog::info("worker {}: loaded {}", options_.id, shard_->slice().ToString());
  return absl::OkStatus();
}

absl::Status WorkerLoop::HandleControl() {
  while (control_.ReceiveNow()) {
    last_heard_ = absl::Now();
    const wire::Envelope& env = control_.envelope();
    switch (env.body_case()) {
      case wire::Envelope::kWelcome: {
        if (absl::Status s = CheckProtocolVersion(env); !s.ok()) return s;
        if (!env.welcome().accepted() && env.welcome().retry_after_ms() > 0) {
          // Kept out for a while (it failed recently): ask again then.
          spdlog::warn("worker {}: {}", options_.id, env.welcome().reason());
          next_hello_ = absl::Now() + absl::Milliseconds(env.welcome().retry_after_ms());
          break;
        }
        if (!env.welcome().accepted()) {
          return absl::PermissionDeniedError(
              absl::StrCat("the coordinator refused this worker: ", env.welcome().reason()));
        }
        if (env.welcome().peer_timeout_ms() > 0) {
          peer_timeout_ = absl::Milliseconds(env.welcome().peer_timeout_ms());
        }
        welcomed_ = true;
        if (env.welcome().heartbeat_interval_ms() > 0) {
          heartbeat_interval_ = absl::Milliseconds(env.welcome().heartbeat_interval_ms());
        }
        pulse_ = std::make_unique<HeartbeatThread>(context_, options_.connect, options_.id,
                                                   heartbeat_interval_, *security_);
        if (env.welcome().coordinator_timeout_ms() > 0) {
          coordinator_timeout_ = absl::Milliseconds(env.welcome().coordinator_timeout_ms());
        }
        spdlog::debug("worker {}: registered", options_.id);
        break;
      }
      case wire::Envelope::kChallenge:
        if (absl::Status s = HandleChallenge(env.challenge()); !s.ok()) return s;
        break;
      case wire::Envelope::kAssign:
        if (absl::Status s = HandleAssign(env.assign()); IsDeviceFailure(s)) {
          return LeaveForDeviceFailure(s);
        } else if (!s.ok()) {
          ReportLoadFailure(env.assign().plan_id(), s);
        }
        break;
      case wire::Envelope::kWeightChunk: {
        const uint64_t plan_id = env.weight_chunk().plan_id();
        if (absl::Status s = HandleWeightChunk(); IsDeviceFailure(s)) {
          return LeaveForDeviceFailure(s);
        } else if (!s.ok()) {
          receiver_.reset();
          ReportLoadFailure(plan_id, s);
        }
        break;
      }
      case wire::Envelope::kActivation:
        // The coordinator feeds the first stage through the control socket.
        HandleActivation(control_);
        if (done_) return exit_status_;  // its device failed
        break;
      case wire::Envelope::kEndSequence:
        if (shard_) shard_->EndSequence(env.end_sequence().sequence_id());
        last_step_.erase(env.end_sequence().sequence_id());
        break;
      case wire::Envelope::kHeartbeat:
        break;
      case wire::Envelope::kShutdown:
        if (env.shutdown().register_again() && options_.wait_coordinator) {
          // A new coordinator that does not know us yet.
          ForgetCoordinator("the coordinator does not know this worker");
          break;
        }
        if (env.shutdown().reason().starts_with("drained")) {
          spdlog::warn("worker {}: {}", options_.id, env.shutdown().reason());
        } else {
          spdlog::debug("worker {}: shutdown ({})", options_.id, env.shutdown().reason());
        }
        done_ = true;
        return absl::OkStatus();
      default:
        control_.DropUnexpected(absl::StrCat("control message of kind ", env.body_case()));
    }
  }
  return absl::OkStatus();
}

void WorkerLoop::HandleActivation(Channel& in) {
  const wire::Activation& a = in.envelope().activation();
  if (shard_ == nullptr) {
    in.DropUnexpected("activation before a shard was loaded");
    return;
  }
  if (a.plan_id() != shard_->assign().plan_id()) {
    in.DropUnexpected(absl::StrCat("activation of plan ", a.plan_id(), ", running plan ",
                                   shard_->assign().plan_id()));
    return;
  }
  if (auto it = last_step_.find(a.sequence_id());
      it != last_step_.end() && a.step() <= it->second) {
    in.DropUnexpected(
        absl::StrCat("step ", a.step(), " of sequence ", a.sequence_id(), " again (a duplicate)"));
    return;
  }
  last_step_[a.sequence_id()] = a.step();
  const int stall_ms = fault_.stall_ms;
  const Fault::Kind fault = fault_.FireAt(a.step());
  if (fault != Fault::Kind::kNone) {
    spdlog::warn("worker {}: injected fault at step {}", options_.id, a.step());
    if (fault == Fault::Kind::kKill) raise(SIGKILL);
    if (fault == Fault::Kind::kStall)
      std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
    if (fault == Fault::Kind::kGpuLost) {
      if (absl::Status s = shard_->InjectDeviceFault(DeviceFault::kLost); !s.ok()) {
        spdlog::error("worker {}: {}", options_.id, std::string(s.message()));
      }
    }
  }
  const std::span<const uint8_t> frame =
      in.tensors().empty() ? std::span<const uint8_t>() : in.tensors()[0];
  const int64_t t0 = NowMicros();
  reduce_->BeginStep(a.sequence_id(), a.step());
  absl::Status s = shard_->Step(a, frame);
  // While it waited for experts elsewhere it served others': its device may have failed there.
  if (absl::Status served = experts_->TakeDeviceFailure(); !served.ok() && s.ok()) s = served;
  if (!s.ok()) {
    if (IsDeviceFailure(s)) {
      LeaveForDeviceFailure(s).IgnoreError();  // Run returns it
      return;
    }
    SendError(std::string(s.message()), a.sequence_id());
    return;
  }
  if (fault_.kind == Fault::Kind::kSlow) {
    // A throttled tab: a fixed extra time, or the step taking `factor` times as long.
    const int64_t extra_us = fault_.stall_ms * 1000 +
                             static_cast<int64_t>((fault_.slow_factor - 1.0) * (NowMicros() - t0));
    std::this_thread::sleep_for(std::chrono::microseconds(extra_us));
  }
  const int64_t compute_us = NowMicros() - t0;
  const ReductionStats sync = reduce_->TakeStats();
  const wire::Assign& assign = shard_->assign();
  auto add_timing = [&](google::protobuf::RepeatedPtrField<wire::StageTiming>* timings) {
    *timings = a.timings();
    wire::StageTiming* t = timings->Add();
    t->set_stage(assign.stage());
    t->set_compute_us(compute_us);
    t->set_wait_us(t0 - a.sent_at_us());  // the hop into this stage (same-host clocks)
    t->set_sync_us(sync.wait_us);
    t->set_sync_bytes(sync.bytes_sent);
    t->set_sync_by_link(sync.received_by_link);
    t->set_rank(assign.rank());
    t->set_local_link(in.last_link() == LinkKind::kSharedMemory);
    t->set_tcp_link(in.last_link() == LinkKind::kTcp);
    if (assign.expert_map_size() > 0) {
      experts_->TakeCallCounts(t->mutable_expert_calls());
    }
  };
  recent_step_us_ = (recent_step_us_ * 7 + compute_us) / 8;
  if (pulse_) pulse_->set_step_time_us(recent_step_us_);

  if (fault == Fault::Kind::kDrop) return;
  // Per token: on the arena, so that building the message allocates nothing.
  wire::Envelope& out = step_out_.Fresh();
  // A garbled envelope: the receiver must drop it (and the coordinator recover the step).
  out.set_protocol_version(fault == Fault::Kind::kCorrupt ? 0xbad : wire::PROTOCOL_VERSION);
  const int copies = fault == Fault::Kind::kDuplicate ? 2 : 1;
  const std::span<const float> result = shard_->output();
  if (shard_->slice().head) {
    wire::Logits* logits = out.mutable_logits();
    logits->set_sequence_id(a.sequence_id());
    logits->set_step(a.step());
    SetTensorFrame(wire::ACTIVATION_F32, 1, static_cast<int64_t>(result.size()),
                   logits->mutable_logits());
    add_timing(logits->mutable_timings());
    logits->set_vocab_begin(assign.tensor_split() ? assign.vocab().begin() : 0);
    logits->set_sent_at_us(NowMicros());
    const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(result.data()),
                                         result.size_bytes());
    for (int i = 0; i < copies; ++i) {
      if (coordinator_link_ != nullptr &&
          SendByLink(*coordinator_link_, out, {&bytes, 1}, &link_header_, &link_frames_)) {
        continue;
      }
      SendToCoordinator(out, {&bytes, 1});
    }
    return;
  }
  wire::Activation* next = out.mutable_activation();
  next->set_sequence_id(a.sequence_id());
  next->set_plan_id(a.plan_id());
  next->set_step(a.step());
  next->set_pos0(a.pos0());
  next->set_n_tokens(a.n_tokens());
  next->set_from_stage(shard_->assign().stage());
  next->set_sent_at_us(NowMicros());
  add_timing(next->mutable_timings());
  const wire::ActivationType type = shard_->assign().activation_type();
  SetTensorFrame(type, a.n_tokens(), shard_->dim(), next->mutable_hidden());
  const size_t encoded_bytes = EncodedActivationBytes(type, static_cast<size_t>(a.n_tokens()),
                                                      static_cast<size_t>(shard_->dim()));
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(result.data()),
                                 result.size_bytes());
  if (type != wire::ACTIVATION_F32 || bytes.size() != encoded_bytes) {
    // f16 / q8_0 on the wire (f32 goes as computed, without a copy).
    encoded_.resize(encoded_bytes);
    EncodeActivations(type, result, encoded_.data());
    bytes = encoded_;
  }
  for (int i = 0; i < copies; ++i) {
    for (const std::unique_ptr<Channel>& next_member : next_) {
      if (absl::Status s = next_member->Send(out, {&bytes, 1}); !s.ok()) {
        SendError(absl::StrCat("cannot pass the activation on: ", s.message()), a.sequence_id());
        return;
      }
    }
  }
}

bool WorkerLoop::LinksSettled() {
  bool settled = coordinator_link_ == nullptr || coordinator_link_->settled();
  for (const std::unique_ptr<Channel>& next : next_) settled = next->LinkSettled() && settled;
  return settled;
}

absl::Status WorkerLoop::Run() {
  if (absl::Status s = Setup(); !s.ok()) return s;
  SendHello();
  absl::Time last_hello = absl::Now();
  last_heard_ = absl::Now();
  while (!done_ && !stop_->load()) {
    // Control, then the data and the expert channels (each a socket and its local link).
    std::vector<zmq::pollitem_t>& items = poll_items_;
    items.clear();
    items.push_back({control_.socket().handle(), 0, ZMQ_POLLIN, 0});
    const size_t data_at = items.size();
    data_in_.AppendPollItems(&items);
    const size_t experts_at = items.size();
    experts_->channel().AppendPollItems(&items);
    std::chrono::milliseconds sleep = arrivals_.SleepFor(NowMicros(), kLongestPoll);
    if (sleep.count() == 0 && arrivals_.enabled() && !warmed_) {
      // Spinning for the next activation: its receive path, out of the caches since the last
      // step streamed the weights, is walked once now rather than when it arrives.
      data_in_.WarmUp();
      warmed_ = true;
    }
    if (links_settle_by_ != absl::InfinitePast()) {
      // New links: set up (a ring mapped, a connection made) while idle, not by the first
      // message; short naps until then.
      if (LinksSettled() || absl::Now() > links_settle_by_) {
        links_settle_by_ = absl::InfinitePast();
      } else {
        sleep = std::min(sleep, std::chrono::milliseconds(1));
      }
    }
    if (sleep.count() > 0 && !(data_in_.PrepareToSleep() && experts_->channel().PrepareToSleep())) {
      sleep = std::chrono::milliseconds(0);
    }
    if (zmq::poll(items, sleep) == 0 && sleep.count() == 0) std::this_thread::yield();
    const std::span<const zmq::pollitem_t> polled(items);
    data_in_.Polled(polled.subspan(data_at, experts_at - data_at));
    experts_->channel().Polled(polled.subspan(experts_at));
    if ((items[experts_at].revents & ZMQ_POLLIN) || experts_->channel().HasLinkMessage()) {
      experts_->ServeQueued();
      if (absl::Status failure = experts_->TakeDeviceFailure(); !failure.ok()) {
        return LeaveForDeviceFailure(failure);
      }
    }
    if (items[0].revents & ZMQ_POLLIN) {
      if (absl::Status s = HandleControl(); !s.ok()) return s;
    }
    // Not only when the socket fired: a link's message rings no bell for a spinning loop.
    if ((items[data_at].revents & ZMQ_POLLIN) || data_in_.HasLinkMessage()) {
      while (!done_ && data_in_.ReceiveNow()) {
        if (data_in_.envelope().has_activation()) {
          arrivals_.Arrived(NowMicros());
          warmed_ = false;
          HandleActivation(data_in_);
        } else {
          data_in_.DropUnexpected("only activations travel on the data socket");
        }
      }
    }
    if (std::optional<std::string> failure = handshakes_->TakeFailure()) {
      if (!welcomed_) return absl::UnauthenticatedError(*failure);
      spdlog::warn("worker {}: {}", options_.id, *failure);
    }
    const absl::Time now = absl::Now();
    if (!welcomed_ && !proof_sent_ && now - last_hello > options_.hello_retry &&
        now >= next_hello_) {
      SendHello();  // the coordinator may have started after us
      last_hello = now;
    }
    if (welcomed_ && now - last_sent_ > heartbeat_interval_) {
      out_.Clear();
      out_.set_protocol_version(wire::PROTOCOL_VERSION);
      out_.mutable_heartbeat()->set_sent_at_us(NowMicros());
      out_.mutable_heartbeat()->set_step_time_us(recent_step_us_);
      SendToCoordinator(out_);
    }
    if (now - last_heard_ > coordinator_timeout_ && options_.wait_coordinator) {
      if (welcomed_) ForgetCoordinator("the coordinator went silent");
      last_heard_ = now;
    } else if (now - last_heard_ > coordinator_timeout_) {
      return absl::UnavailableError(
          absl::StrCat("no word from the coordinator at ", options_.connect, " for ",
                       absl::FormatDuration(now - last_heard_), "; exiting"));
    }
  }
  if (stop_->load() && welcomed_) {
    out_.Clear();
    out_.set_protocol_version(wire::PROTOCOL_VERSION);
    out_.mutable_leaving()->set_reason("signal");
    SendToCoordinator(out_);
  }
  return exit_status_;
}

}  // namespace

absl::Status RunWorker(const WorkerOptions& options, const std::atomic<bool>* stop) {
  WorkerLoop loop(options, stop);
  return loop.Run();
}

}  // namespace shardrun
