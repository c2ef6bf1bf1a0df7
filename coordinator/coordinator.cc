#include "coordinator/coordinator.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "partitioner/byte_size.h"
#include "partitioner/partitioner.h"
#include "proto/message_codec.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

wire::Envelope& Start(wire::Envelope& envelope) {
  envelope.Clear();
  envelope.set_protocol_version(wire::PROTOCOL_VERSION);
  return envelope;
}

}  // namespace

Coordinator::Coordinator(const CoordinatorOptions& options, const ModelFile& model,
                         zmq::context_t context)
    : options_(options),
      model_(model),
      context_(std::move(context)),
      control_(context_, zmq::socket_type::router, "coordinator"),
      streamer_(model) {}

Coordinator::~Coordinator() = default;

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(const CoordinatorOptions& options,
                                                                 const ModelFile& model) {
  std::unique_ptr<Coordinator> c(new Coordinator(options, model, zmq::context_t()));
  const absl::Time t0 = absl::Now();
  c->model_hash_ = HashBytes(model.bytes());
  spdlog::debug("model sha256 {} ({:.0f} ms)", ShortDigest(c->model_hash_),
                absl::ToDoubleMilliseconds(absl::Now() - t0));
  const AccessModel access_model{c->model_hash_, model.config().n_layers, model.config().n_experts,
                                 options.kind};
  auto access = AccessControl::Create(options.access, options.listen, c->context_, access_model);
  if (!access.ok()) return access.status();
  c->access_ = *std::move(access);
  if (c->access_) {
    if (absl::Status s = c->access_->SecureControlSocket(c->control_); !s.ok()) return s;
  }
  try {
    // Report unroutable peers (a dead worker) as errors instead of dropping silently.
    c->control_.socket().set(zmq::sockopt::router_mandatory, 1);
    c->control_.socket().bind(options.listen);
    c->endpoint_ = c->control_.socket().get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, ": ", e.what()));
  }
  if (!c->access_) {
    // Logits from the last stage skip the socket (proto/link.h). Listening on every
    // interface, the TCP link names no host: each worker puts in the one it reached us at.
    const std::string host =
        c->endpoint_.starts_with("tcp://") ? EndpointHost(c->endpoint_) : std::string();
    const bool wildcard = host == "0.0.0.0" || host == "*" || host == "::";
    c->control_.OpenInbox(options.links, wildcard ? std::string("*") : host);
  }
  spdlog::info("coordinator listening on {}{}", c->endpoint_,
               c->access_
                   ? absl::StrCat(" (CURVE, server key ", c->access_->keys().Public().Z85(), ")")
                   : "");
  return c;
}

int Coordinator::context_length() const {
  const int model_ctx = model_.config().context_length;
  return options_.context_length > 0 ? std::min(options_.context_length, model_ctx) : model_ctx;
}

void Coordinator::Send(const std::string& worker, const wire::Envelope& envelope,
                       std::span<const std::span<const uint8_t>> tensors) {
  if (absl::Status s = control_.Send(envelope, tensors, worker); !s.ok()) {
    auto it = workers_.find(worker);
    if (it != workers_.end() && it->second.unreachable_since == absl::InfinitePast()) {
      it->second.unreachable_since = absl::Now();
      spdlog::warn("worker {}: {}", worker, std::string(s.message()));
    }
  }
}

std::string Coordinator::HelloRefusal(const std::string& sender, const wire::Hello& hello,
                                      absl::Duration* retry_after) const {
  if (absl::Status s = CheckProtocolVersion(control_.envelope()); !s.ok()) {
    return std::string(s.message());
  }
  if (hello.worker_id() != sender) return "worker id does not match the connection's identity";
  if (hello.capabilities().has_model_file() &&
      hello.model_hash() != std::string(model_hash_.begin(), model_hash_.end())) {
    return absl::StrCat("model file differs from the coordinator's (sha256 ",
                        ShortDigest(model_hash_), "...)");
  }
  if (hello.budget().memory_bytes() <= 0 || hello.budget().threads() < 1) {
    return "the budget needs memory > 0 and threads >= 1";
  }
  if (auto f = failures_.find(sender);
      f != failures_.end() && absl::Now() < f->second.refused_until) {
    // A worker that keeps failing is kept out, twice as long after each failure.
    *retry_after = f->second.refused_until - absl::Now();
    return absl::StrCat("worker ", sender, " failed ", f->second.count, " time(s); try again in ",
                        absl::FormatDuration(absl::Ceil(*retry_after, absl::Milliseconds(100))));
  }
  return "";
}

void Coordinator::SendWelcome(const std::string& sender, const std::string& refusal,
                              absl::Duration retry_after) {
  wire::Welcome* welcome = Start(out_).mutable_welcome();
  welcome->set_protocol_version(wire::PROTOCOL_VERSION);
  welcome->set_heartbeat_interval_ms(absl::ToInt64Milliseconds(options_.heartbeat_interval));
  welcome->set_coordinator_timeout_ms(absl::ToInt64Milliseconds(options_.coordinator_timeout));
  welcome->set_peer_timeout_ms(absl::ToInt64Milliseconds(options_.worker_timeout));
  welcome->set_accepted(refusal.empty());
  if (!refusal.empty()) {
    welcome->set_reason(refusal);
    if (retry_after > absl::ZeroDuration()) {
      welcome->set_retry_after_ms(absl::ToInt64Milliseconds(retry_after) + 1);
    }
  }
  Send(sender, out_);
}

void Coordinator::HandleHello(const std::string& sender, const wire::Hello& hello) {
  absl::Duration retry_after;
  std::string refusal = HelloRefusal(sender, hello, &retry_after);
  AdmittedWorker admitted;
  if (refusal.empty() && access_) {
    AccessControl::HelloAnswer answer = access_->OnHello(sender, control_.sender_user_id(), hello);
    if (answer.challenge) {
      // Another origin's worker: its token and proof first (HandleProof).
      spdlog::info("worker {} ({}) is not listed: asking for its permission token", sender,
                   hello.capabilities().host());
      Start(out_).mutable_challenge()->Swap(&*answer.challenge);
      Send(sender, out_);
      return;
    }
    refusal = answer.refusal;
    if (answer.admitted) admitted = *answer.admitted;
  }
  if (!refusal.empty()) {
    spdlog::warn("refused worker {} ({}): {}", sender, hello.capabilities().host(), refusal);
    SendWelcome(sender, refusal, retry_after);
    return;
  }
  Register(sender, hello, admitted);
}

void Coordinator::HandleProof(const std::string& sender, const wire::Proof& proof) {
  auto admitted = access_->OnProof(sender, control_.sender_user_id(), proof);
  if (!admitted.ok()) {
    // Nothing is placed on it; it learns why.
    SendWelcome(sender, absl::StrCat("permission token refused: ", admitted.status().message()));
    return;
  }
  const wire::Hello& hello = admitted->first;
  // The world may have changed while it proved its token (a failure of its predecessor).
  absl::Duration retry_after;
  if (std::string refusal = HelloRefusal(sender, hello, &retry_after); !refusal.empty()) {
    SendWelcome(sender, refusal, retry_after);
    return;
  }
  Register(sender, hello, admitted->second);
}

void Coordinator::Register(const std::string& sender, const wire::Hello& hello,
                           const AdmittedWorker& admitted) {
  WorkerInfo& info = workers_[sender];
  const bool again = info.pid != 0;
  if (again && info.pid != hello.capabilities().pid()) {
    // A new process under the same name: the old one (and its shard) is gone.
    spdlog::warn("worker {} restarted (pid {} -> {})", sender, info.pid,
                 hello.capabilities().pid());
    replaced_.insert(sender);
  }
  info.budget.worker_id = sender;
  info.budget.host = hello.capabilities().host();
  info.budget.memory_bytes = hello.budget().memory_bytes();
  info.budget.threads = hello.budget().threads();
  info.budget.backend =
      hello.budget().backend() == wire::BACKEND_VULKAN ? BackendKind::kVulkan : BackendKind::kCpu;
  info.budget.gpu_memory_bytes = hello.budget().gpu_memory_bytes();
  info.budget.compute_capacity = hello.budget().threads();
  info.budget.scope = admitted.scope;
  info.curve_key = admitted.curve_key;
  info.data_endpoint = hello.data_endpoint();
  info.link_endpoint = hello.link_endpoint();
  info.reduce_endpoint = hello.reduce_endpoint();
  info.reduce_link_endpoint = hello.reduce_link_endpoint();
  info.expert_endpoint = hello.expert_endpoint();
  info.expert_link_endpoint = hello.expert_link_endpoint();
  info.simd_level = hello.capabilities().simd_level();
  info.pid = hello.capabilities().pid();
  info.has_model_file = hello.capabilities().has_model_file();
  info.last_heard = absl::Now();
  SendWelcome(sender, "");
  if (!again) {
    spdlog::info("worker {} registered: host {}, pid {}, {} threads, {} memory, {}{}", sender,
                 info.budget.host, info.pid, info.budget.threads,
                 FormatBytes(info.budget.memory_bytes), info.simd_level,
                 admitted.description.empty() ? "" : absl::StrCat("; ", admitted.description));
  }
}

void Coordinator::DrainInvalidTokens() {
  if (!access_) return;
  for (const auto& [id, why] : access_->TakeInvalidated()) {
    spdlog::warn("draining worker {}: {}", id, why);
    Start(out_).mutable_shutdown()->set_reason(absl::StrCat("drained: ", why));
    Send(id, out_);
    const std::vector<std::string>& plan_ids = PlanWorkerIds();
    if (std::find(plan_ids.begin(), plan_ids.end(), id) != plan_ids.end()) {
      drained_.insert(id);  // lost to the plan: recovery moves its shard (recovery.cc)
    } else {
      workers_.erase(id);
      streamer_.Cancel(id);
    }
  }
}

void Coordinator::Pump(absl::Duration timeout) {
  // While weights stream, the loop comes back at once to send the next chunks.
  if (streamer_.busy()) timeout = std::min(timeout, absl::Milliseconds(1));
  const auto longest =
      std::chrono::milliseconds(std::max<int64_t>(0, absl::ToInt64Milliseconds(timeout)));
  // Links to the first stage are set up while waiting, not by the first step (LinkOutlet).
  for (const std::unique_ptr<LinkOutlet>& link : step_links_) {
    if (link != nullptr) link->settled();
  }
  // Around the next logits' predicted arrival the loop polls without sleeping.
  const auto wait = logits_arrivals_.SleepFor(absl::ToUnixMicros(absl::Now()), longest);
  bool got = control_.Receive(wait);
  if (!got && wait.count() == 0) std::this_thread::yield();
  while (got) {
    const std::string& sender = control_.sender();
    const wire::Envelope& env = control_.envelope();
    if (control_.last_from_link()) {
      // A link names no sender: it carries only the last stage's logits.
      if (env.has_logits()) {
        HandleLogits(env.logits(), control_.tensors()[0]);
      } else {
        control_.DropUnexpected("only logits come by link");
      }
      got = control_.ReceiveNow();
      continue;
    }
    if (sender.ends_with("#hb")) {
      // A worker's heartbeat thread (worker/heartbeat_thread.h): it beats while the worker's
      // loop is busy loading or computing.
      if (auto it = workers_.find(sender.substr(0, sender.size() - 3));
          it != workers_.end() && env.has_heartbeat()) {
        it->second.last_heard = absl::Now();
        it->second.step_time_us = env.heartbeat().step_time_us();
      }
      got = control_.ReceiveNow();
      continue;
    }
    if (auto it = workers_.find(sender); it != workers_.end()) {
      it->second.last_heard = absl::Now();
      it->second.unreachable_since = absl::InfinitePast();
    } else if (env.body_case() != wire::Envelope::kHello &&
               env.body_case() != wire::Envelope::kProof) {
      // Declared dead (or never registered): it must not think it still holds a shard.
      Start(out_).mutable_shutdown()->set_reason("not a registered worker (declared dead?)");
      out_.mutable_shutdown()->set_register_again(true);
      Send(sender, out_);
      control_.DropUnexpected(absl::StrCat("message from unregistered worker ", sender));
      got = control_.ReceiveNow();
      continue;
    }
    switch (env.body_case()) {
      case wire::Envelope::kHello:
        HandleHello(sender, env.hello());
        break;
      case wire::Envelope::kProof:
        if (access_ && !workers_.contains(sender)) {
          HandleProof(sender, env.proof());
        } else {
          control_.DropUnexpected(absl::StrCat("a proof from ", sender, " that nobody asked for"));
        }
        break;
      case wire::Envelope::kHeartbeat:
        if (auto it = workers_.find(sender); it != workers_.end()) {
          it->second.step_time_us = env.heartbeat().step_time_us();
        }
        break;
      case wire::Envelope::kLoadProgress:
        if (env.load_progress().plan_id() == plan_id_ && loads_.contains(sender)) {
          loads_[sender] = env.load_progress();
          streamer_.Acknowledge(sender, env.load_progress().bytes_done());
          if (!env.load_progress().error().empty()) streamer_.Cancel(sender);
        } else {
          control_.DropUnexpected("load progress for another plan");
        }
        break;
      case wire::Envelope::kLogits:
        HandleLogits(env.logits(), control_.tensors()[0]);
        break;
      case wire::Envelope::kFetchWeights: {
        auto offered = offered_.find(sender);
        if (env.fetch_weights().plan_id() != plan_id_ || offered == offered_.end()) {
          control_.DropUnexpected(absl::StrCat("fetch weights from ", sender, " for no plan"));
          break;
        }
        if (absl::Status s = streamer_.Start(sender, env.fetch_weights(), offered->second);
            !s.ok()) {
          loads_[sender].set_error(std::string(s.message()));
        }
        break;
      }
      case wire::Envelope::kError:
        if (env.error().plan_id() != 0 && env.error().plan_id() != plan_id_) {
          // A step of a plan recovery already replaced: what failed is being redone.
          spdlog::info("worker {}: error in replaced plan {} ignored: {}", sender,
                       env.error().plan_id(), env.error().message());
          break;
        }
        worker_error_ = absl::StrCat("worker ", sender, ": ", env.error().message());
        break;
      case wire::Envelope::kLeaving:
        spdlog::warn("worker {} is leaving: {}", sender, env.leaving().reason());
        workers_.erase(sender);
        if (access_) access_->Forget(sender);
        streamer_.Cancel(sender);
        break;
      default:
        control_.DropUnexpected(
            absl::StrCat("message of kind ", env.body_case(), " from ", sender));
    }
    got = control_.ReceiveNow();
  }
  streamer_.Pump(control_, /*max_chunks=*/16);
  DrainInvalidTokens();
  if (absl::Now() - last_heartbeat_ >= options_.heartbeat_interval) SendHeartbeats();
}

void Coordinator::SendHeartbeats() {
  last_heartbeat_ = absl::Now();
  Start(out_).mutable_heartbeat()->set_sent_at_us(absl::ToUnixMicros(last_heartbeat_));
  for (const auto& [id, info] : workers_) Send(id, out_);
}

bool Coordinator::AcceptLogits(PendingStep& pending, const wire::Logits& l,
                               std::span<const uint8_t> frame) {
  // Which member of the last stage sent this part: the one whose rows start at vocab_begin.
  const auto part = std::find(logits_parts_.begin(), logits_parts_.end(), l.vocab_begin());
  const size_t index = static_cast<size_t>(part - logits_parts_.begin());
  const size_t offset = static_cast<size_t>(l.vocab_begin()) * sizeof(float);
  if (part == logits_parts_.end() || (pending.parts_received >> index & 1) != 0 ||
      offset + frame.size() > pending.logits.size_bytes()) {
    control_.DropUnexpected(absl::StrCat("logits part at row ", l.vocab_begin(), " of ",
                                         frame.size(), " bytes for sequence ", l.sequence_id(),
                                         " that does not fit or came twice"));
    return false;
  }
  std::memcpy(reinterpret_cast<uint8_t*>(pending.logits.data()) + offset, frame.data(),
              frame.size());
  pending.parts_received |= uint64_t{1} << index;
  // Timings follow the path through rank 0 of every stage (the part with the first rows).
  if (index == 0) {
    for (const wire::StageTiming& t : l.timings()) {
      if (t.stage() < 0 || t.stage() >= static_cast<int>(stage_times_.size())) continue;
      StageTimes& st = stage_times_[t.stage()];
      st.steps++;
      st.compute_us += t.compute_us();
      st.sync_us += t.sync_us();
      st.sync_bytes += t.sync_bytes();
      st.sync_by_link += t.sync_by_link();
      st.local_link_hops += t.local_link() ? 1 : 0;
      st.tcp_link_hops += t.tcp_link() ? 1 : 0;
      if (pending.n_tokens == 1) {
        st.hop_us.Add(t.wait_us());
        st.decode_steps++;
        st.decode_compute_us += t.compute_us();
      } else {
        st.batch_hops++;
        st.batch_hop_max_us = std::max(st.batch_hop_max_us, t.wait_us());
      }
      st.expert_calls.resize(std::max(st.expert_calls.size(), size_t(t.expert_calls_size())));
      for (int w = 0; w < t.expert_calls_size(); ++w) st.expert_calls[w] += t.expert_calls(w);
    }
    if (pending.n_tokens == 1) {
      decode_split_.steps++;
      decode_split_.wall_us += absl::ToInt64Microseconds(absl::Now() - pending.submitted);
      for (const wire::StageTiming& t : l.timings()) decode_split_.compute_us += t.compute_us();
    }
    if (l.sent_at_us() > 0) {
      return_hop_us_.Add(absl::ToUnixMicros(absl::Now()) - l.sent_at_us());
    }
  }
  const uint64_t all =
      logits_parts_.size() == 64 ? ~uint64_t{0} : (uint64_t{1} << logits_parts_.size()) - 1;
  if (pending.parts_received != all) return false;
  // Every part arrived: together they must be the whole vocabulary.
  return true;
}

void Coordinator::SetPlan(const ShardPlan& plan) {
  plan_ = plan;
  plan_worker_ids_.clear();
  for (const ShardAssignment& a : plan_.assignments) {
    const std::string& id = plan_.workers[a.worker].worker_id;
    if (std::find(plan_worker_ids_.begin(), plan_worker_ids_.end(), id) == plan_worker_ids_.end()) {
      plan_worker_ids_.push_back(id);
    }
  }
}

absl::Status Coordinator::CheckWorkersAlive() const {
  for (const std::string& id : PlanWorkerIds()) {
    auto it = workers_.find(id);
    if (it == workers_.end()) return absl::UnavailableError(absl::StrCat("worker ", id, " left"));
    if (drained_.contains(id)) {
      return absl::UnavailableError(absl::StrCat("worker ", id, " was drained (its token)"));
    }
    const absl::Time now = absl::Now();
    if (Unreachable(it->second, now)) {
      // Killed: a load or step it was sent will never come back (LostWorkers says the same).
      return absl::UnavailableError(
          absl::StrCat("worker ", id, " is gone (its connection closed)"));
    }
    const absl::Duration silent = now - it->second.last_heard;
    if (silent > options_.worker_timeout) {
      return absl::UnavailableError(
          absl::StrCat("worker ", id, " has been silent for ", absl::FormatDuration(silent)));
    }
  }
  return absl::OkStatus();
}

absl::Status Coordinator::WaitForWorkers() {
  const absl::Time deadline = absl::Now() + options_.register_timeout;
  absl::Time last_report = absl::Now();
  while (static_cast<int>(workers_.size()) < options_.expected_workers) {
    if (absl::Now() > deadline) {
      std::vector<std::string> missing;
      for (const std::string& id : options_.expected_ids) {
        if (!workers_.contains(id)) missing.push_back(id);
      }
      std::vector<std::string> present;
      for (const auto& [id, info] : workers_) present.push_back(id);
      return absl::DeadlineExceededError(absl::StrCat(
          "waited ", absl::FormatDuration(options_.register_timeout), " for ",
          options_.expected_workers, " workers at ", endpoint_, "; ", workers_.size(),
          " registered (", present.empty() ? "none" : absl::StrJoin(present, ", "), ")",
          missing.empty() ? "" : absl::StrCat("; missing: ", absl::StrJoin(missing, ", "))));
    }
    if (absl::Now() - last_report > absl::Seconds(5)) {
      spdlog::info("waiting for workers: {} of {} registered", workers_.size(),
                   options_.expected_workers);
      last_report = absl::Now();
    }
    Pump(absl::Milliseconds(100));
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardPlan> Coordinator::Plan() const {
  // Preference: the current plan's surviving workers in plan order (after a failure the plan
  // changes least), then locally started workers in start order, then the others by id.
  std::vector<std::string> order;
  auto add = [&](const std::string& id) {
    if (workers_.contains(id) && std::find(order.begin(), order.end(), id) == order.end()) {
      order.push_back(id);
    }
  };
  for (const WorkerBudget& w : plan_.workers) add(w.worker_id);
  for (const std::string& id : options_.expected_ids) add(id);
  for (const auto& [id, info] : workers_) add(id);
  // Spares stay out of the plan until a worker is lost.
  const size_t size = static_cast<size_t>(std::max(1, options_.expected_workers - options_.spares));
  if (order.size() > size) order.resize(size);
  // Stages follow this order: a worker whose token scope starts at a later layer comes later
  // (stable, so workers without a scope keep their places).
  auto first_layer = [&](const std::string& id) {
    const auth::ShardScope& scope = workers_.at(id).budget.scope;
    if (scope.layers()) return scope.layers()->empty() ? 0 : scope.layers()->spans()[0].begin;
    return scope.experts() ? std::numeric_limits<int>::max() : 0;  // experts only: no stage
  };
  std::stable_sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return first_layer(a) < first_layer(b);
  });
  std::vector<WorkerBudget> budgets;
  for (const std::string& id : order) {
    budgets.push_back(workers_.at(id).budget);
    if (auto it = measured_speed_.find(id); it != measured_speed_.end()) {
      budgets.back().compute_capacity = it->second;
    }
  }
  // A worker not measured yet is assumed as fast as the measured mean per declared thread.
  if (!measured_speed_.empty()) {
    double per_thread = 0;
    int n = 0;
    for (const std::string& id : order) {
      if (auto it = measured_speed_.find(id); it != measured_speed_.end()) {
        per_thread += it->second / std::max(1, workers_.at(id).budget.threads);
        ++n;
      }
    }
    for (size_t i = 0; i < order.size(); ++i) {
      if (n > 0 && !measured_speed_.contains(order[i])) {
        budgets[i].compute_capacity = per_thread / n * std::max(1, budgets[i].threads);
      }
    }
  }
  PlanOptions plan_options;
  plan_options.kind = options_.kind;
  plan_options.context_length = context_length();
  plan_options.max_batch = options_.max_batch;
  plan_options.max_sequences = options_.max_sequences;
  plan_options.tensor_parallel = options_.tensor_parallel;
  plan_options.reduction = options_.reduction;
  plan_options.expert_load = options_.expert_load;
  return MakePlan(ShapeOf(model_), budgets, plan_options);
}

absl::Status Coordinator::Deploy(const ShardPlan& plan) {
  SetPlan(plan);
  ++plan_id_;
  loads_.clear();
  offered_.clear();
  stage_members_.clear();
  logits_parts_.clear();
  stage_times_.assign(plan.stages.size(), StageTimes{});
  balance_mark_.assign(plan.stages.size(), {0, 0});
  for (const Stage& stage : plan.stages) {
    std::vector<std::string>& members = stage_members_.emplace_back();
    for (int a : stage.assignments) {
      members.push_back(plan.workers[plan.assignments[a].worker].worker_id);
    }
    if (members.empty() || members.size() > 64) {
      return absl::InvalidArgumentError("a stage needs 1 to 64 workers");
    }
  }
  step_links_.clear();
  for (const std::string& id : stage_members_[0]) {
    std::unique_ptr<LinkOutlet>& link = step_links_.emplace_back();
    const std::string& address = workers_.at(id).link_endpoint;
    if (address.empty() || options_.links == LinkMode::kNone || access_) continue;
    absl::StatusOr<std::unique_ptr<LinkOutlet>> outlet =
        LinkOutlet::Connect(address, options_.links);
    if (outlet.ok()) link = *std::move(outlet);
  }
  for (int a : plan.stages.back().assignments) {
    const std::optional<TensorSplit>& split = plan.assignments[a].slice.split;
    logits_parts_.push_back(split ? split->vocab.begin : 0);
  }
  // Expert plans: every expert's holders, and where each worker takes expert requests.
  wire::Assign experts;
  if (plan.kind == PartitionKind::kExpert) {
    std::map<std::pair<int, int>, std::vector<int>> holders;
    for (const ShardAssignment& a : plan.assignments) {
      for (const ExpertRef& e : a.experts) holders[{e.layer, e.expert}].push_back(a.worker);
    }
    for (const auto& [key, workers] : holders) {
      wire::ExpertHolders* h = experts.add_expert_map();
      h->set_layer(key.first);
      h->set_expert(key.second);
      h->mutable_workers()->Add(workers.begin(), workers.end());
    }
    for (const WorkerBudget& w : plan.workers) {
      const WorkerInfo& info = workers_.at(w.worker_id);
      if (!info.has_model_file) {
        return absl::UnimplementedError(absl::StrCat(
            "--type expert needs the model file on every worker; ", w.worker_id,
            " has none (streamed weights work with --type layer, pipeline and tensor)"));
      }
      experts.add_expert_endpoints(info.expert_endpoint);
      experts.add_expert_link_endpoints(info.expert_link_endpoint);
      if (access_) experts.add_expert_curve_keys(CurveKeyOf(w.worker_id));
    }
  }
  const std::map<std::string, std::set<std::string>> inbound = InboundKeys(plan);
  auto send_assign = [&](const ShardAssignment& a, int stage, size_t rank) {
    const std::string& id = plan.workers[a.worker].worker_id;
    wire::Assign* assign = Start(out_).mutable_assign();
    if (plan.kind == PartitionKind::kExpert) {
      assign->MergeFrom(experts);
      assign->set_worker_index(a.worker);
      for (const ExpertRef& e : a.experts) {
        wire::ExpertRef* ref = assign->add_experts();
        ref->set_layer(e.layer);
        ref->set_expert(e.expert);
      }
    }
    assign->set_plan_id(plan_id_);
    assign->set_stage(static_cast<int32_t>(stage));
    assign->mutable_slice()->set_embedding(a.slice.embedding);
    assign->mutable_slice()->set_layer_begin(a.slice.layers.begin);
    assign->mutable_slice()->set_layer_end(a.slice.layers.end);
    assign->mutable_slice()->set_head(a.slice.head);
    assign->set_context_length(plan.context_length);
    assign->set_max_batch(options_.max_batch);
    assign->set_max_sequences(options_.max_sequences);
    assign->set_model_hash(model_hash_.data(), model_hash_.size());
    assign->set_activation_type(options_.activation_type);
    if (stage >= 0) {
      const std::vector<std::string>& members = stage_members_[stage];
      if (const std::optional<TensorSplit>& t = a.slice.split) {
        assign->set_tensor_split(true);
        assign->mutable_kv_heads()->set_begin(t->kv_heads.begin);
        assign->mutable_kv_heads()->set_end(t->kv_heads.end);
        assign->mutable_ffn_columns()->set_begin(t->ffn_columns.begin);
        assign->mutable_ffn_columns()->set_end(t->ffn_columns.end);
        assign->mutable_vocab()->set_begin(t->vocab.begin);
        assign->mutable_vocab()->set_end(t->vocab.end);
        assign->set_rank(static_cast<int32_t>(rank));
        for (const std::string& member : members) {
          assign->add_group_endpoints(workers_.at(member).reduce_endpoint);
          assign->add_group_link_endpoints(workers_.at(member).reduce_link_endpoint);
          if (access_) assign->add_group_curve_keys(CurveKeyOf(member));
        }
        assign->set_reduction(plan.reduction == ReductionPath::kGatherBroadcast
                                  ? wire::REDUCTION_GATHER_BROADCAST
                                  : wire::REDUCTION_ALL_TO_ALL);
      }
      // Member j of the next stage hears from member j mod (this stage's size): every member
      // of the next stage gets the hidden state once, and the sending is shared out.
      if (stage + 1 < static_cast<int>(plan.stages.size())) {
        const std::vector<std::string>& next = stage_members_[stage + 1];
        for (size_t j = rank; j < next.size(); j += members.size()) {
          assign->add_next_endpoints(workers_.at(next[j]).data_endpoint);
          assign->add_next_link_endpoints(workers_.at(next[j]).link_endpoint);
          if (access_) assign->add_next_curve_keys(CurveKeyOf(next[j]));
        }
      } else if (control_.inbox() != nullptr) {
        assign->set_coordinator_link_endpoint(control_.inbox()->address());
      }
    }
    if (auto keys = inbound.find(id); keys != inbound.end()) {
      for (const std::string& key : keys->second) assign->add_inbound_curve_keys(key);
    }
    if (!workers_.at(id).has_model_file) {
      // The worker builds a sparse copy of the file from these ranges (worker/weight_cache.h).
      std::vector<wire::FileRange> ranges = streamer_.RangesFor(a.slice);
      assign->set_model_file_size(static_cast<int64_t>(model_.file_size()));
      assign->mutable_ranges()->Add(ranges.begin(), ranges.end());
      offered_[id] = std::move(ranges);
    }
    loads_[id] = wire::LoadProgress();
    Send(id, out_);
  };
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    for (size_t rank = 0; rank < plan.stages[s].assignments.size(); ++rank) {
      send_assign(plan.assignments[plan.stages[s].assignments[rank]], static_cast<int>(s), rank);
    }
  }
  for (const ShardAssignment& a : plan.assignments) {
    if (a.stage < 0) send_assign(a, -1, 0);  // holds experts only
  }
  // Wait for every shard, showing progress per worker.
  const absl::Time deadline = absl::Now() + options_.load_timeout;
  absl::Time last_report = absl::InfinitePast();
  while (true) {
    bool all_done = true;
    for (const auto& [id, p] : loads_) {
      if (!p.error().empty()) {
        return absl::InternalError(
            absl::StrCat("worker ", id, " could not load its shard: ", p.error()));
      }
      all_done = all_done && p.done();
    }
    if (all_done) break;
    if (absl::Status s = CheckWorkersAlive(); !s.ok()) return s;
    if (absl::Now() > deadline) return absl::DeadlineExceededError("loading the shards timed out");
    if (absl::Now() - last_report > absl::Milliseconds(500)) {
      std::vector<std::string> parts;
      for (const auto& [id, p] : loads_) {
        parts.push_back(p.done() ? absl::StrCat(id, " ready")
                                 : absl::StrCat(id, " ", FormatBytes(p.bytes_done()), "/",
                                                FormatBytes(p.bytes_total())));
      }
      spdlog::info("loading: {}", absl::StrJoin(parts, ", "));
      last_report = absl::Now();
    }
    Pump(absl::Milliseconds(50));
  }
  for (const auto& [id, p] : loads_) spdlog::info("worker {} loaded its shard", id);
  return absl::OkStatus();
}

std::string Coordinator::CurveKeyOf(const std::string& worker) const {
  const std::optional<auth::CurveKeyBytes>& key = workers_.at(worker).curve_key;
  return key ? std::string(reinterpret_cast<const char*>(key->data()), key->size()) : "";
}

std::map<std::string, std::set<std::string>> Coordinator::InboundKeys(const ShardPlan& plan) const {
  std::map<std::string, std::set<std::string>> inbound;
  if (!access_) return inbound;
  for (size_t s = 0; s < stage_members_.size(); ++s) {
    const std::vector<std::string>& members = stage_members_[s];
    // Tensor groups: every member may send its partial sums to every other.
    for (const std::string& to : members) {
      for (const std::string& from : members) {
        if (from != to) inbound[to].insert(CurveKeyOf(from));
      }
    }
    // Member j of the next stage hears from member j mod (this stage's size), as in Deploy.
    if (s + 1 < stage_members_.size()) {
      const std::vector<std::string>& next = stage_members_[s + 1];
      for (size_t j = 0; j < next.size(); ++j) {
        inbound[next[j]].insert(CurveKeyOf(members[j % members.size()]));
      }
    }
  }
  if (plan.kind == PartitionKind::kExpert) {
    // Requests go to an expert's holders and replies back to the asker: any plan worker.
    for (const WorkerBudget& to : plan.workers) {
      for (const WorkerBudget& from : plan.workers) {
        if (from.worker_id != to.worker_id)
          inbound[to.worker_id].insert(CurveKeyOf(from.worker_id));
      }
    }
  }
  return inbound;
}

absl::Status Coordinator::DeployWithRecovery(const ShardPlan& plan) {
  absl::Status s = Deploy(plan);
  if (s.ok() || options_.recovery_timeout <= absl::ZeroDuration()) return s;
  const std::vector<std::string> lost = LostWorkers();
  if (lost.empty()) return s;  // not a lost worker: loading itself failed
  return Recover(std::string(s.message()), lost);
}

absl::Status Coordinator::Submit(uint64_t sequence_id, int pos0, std::span<const int32_t> tokens,
                                 std::span<float> logits) {
  if (stage_members_.empty()) return absl::FailedPreconditionError("no plan deployed");
  if (absl::Status s = MaybeRebalance(); !s.ok()) return s;
  if (pending_.contains(sequence_id)) {
    return absl::FailedPreconditionError(
        absl::StrCat("sequence ", sequence_id, " already has a step in flight"));
  }
  std::vector<int32_t>& history = history_[sequence_id];
  if (pos0 < 0 || static_cast<size_t>(pos0) > history.size()) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", sequence_id, " step at position ",
                                                   pos0, " after ", history.size(), " tokens"));
  }
  history.resize(static_cast<size_t>(pos0));
  history.insert(history.end(), tokens.begin(), tokens.end());
  PendingStep& step = pending_[sequence_id];
  step = PendingStep{next_step_++, logits, static_cast<int>(tokens.size()), absl::Now(), 0, pos0};
  SendStep(sequence_id, step);
  return absl::OkStatus();
}

void Coordinator::HandleLogits(const wire::Logits& l, std::span<const uint8_t> frame) {
  logits_arrivals_.Arrived(absl::ToUnixMicros(absl::Now()));
  auto it = pending_.find(l.sequence_id());
  if (it == pending_.end() || l.step() != it->second.step) {
    control_.DropUnexpected(absl::StrCat("logits for sequence ", l.sequence_id(), " step ",
                                         l.step(), " that nobody waits for"));
    return;
  }
  if (AcceptLogits(it->second, l, frame)) {
    pending_.erase(it);
    completed_.push_back(l.sequence_id());
  }
}

void Coordinator::SendStep(uint64_t sequence_id, const PendingStep& step) {
  const std::vector<int32_t>& history = history_[sequence_id];
  // Per token: on the arena, so that building the message allocates nothing.
  wire::Envelope& envelope = step_out_.Fresh();
  envelope.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Activation* a = envelope.mutable_activation();
  a->set_sequence_id(sequence_id);
  a->set_plan_id(plan_id_);
  a->set_step(step.step);
  a->set_pos0(step.pos0);
  a->set_n_tokens(step.n_tokens);
  a->mutable_tokens()->Add(history.begin() + step.pos0,
                           history.begin() + step.pos0 + step.n_tokens);
  a->set_sent_at_us(absl::ToUnixMicros(absl::Now()));
  const std::vector<std::string>& first = stage_members_[0];
  for (size_t i = 0; i < first.size(); ++i) {
    LinkOutlet* link = i < step_links_.size() ? step_links_[i].get() : nullptr;
    if (link != nullptr && SendByLink(*link, envelope, {}, &link_header_, &link_frames_)) continue;
    Send(first[i], envelope);
  }
}

absl::StatusOr<uint64_t> Coordinator::WaitAny() {
  absl::Time deadline = absl::Now() + options_.step_timeout;
  while (completed_.empty()) {
    if (pending_.empty()) return absl::FailedPreconditionError("no step in flight");
    // A failure: a worker reported an error, one is lost, or the step is overdue.
    std::string failure;
    std::vector<std::string> lost = LostWorkers();
    if (!worker_error_.empty()) {
      failure = std::move(worker_error_);
      worker_error_.clear();
    } else if (!lost.empty()) {
      failure = absl::StrCat("lost worker(s) ", absl::StrJoin(lost, ", "));
    } else if (absl::Now() > deadline) {
      failure = absl::StrCat("no logits within ", absl::FormatDuration(options_.step_timeout));
    }
    if (!failure.empty()) {
      if (options_.recovery_timeout <= absl::ZeroDuration() || recovering_) {
        return absl::UnavailableError(failure);
      }
      if (absl::Status s = Recover(failure, lost); !s.ok()) return s;
      deadline = absl::Now() + options_.step_timeout;
      continue;
    }
    Pump(absl::Milliseconds(100));
  }
  const uint64_t sequence = completed_.front();
  completed_.pop_front();
  return sequence;
}

absl::Status Coordinator::Forward(uint64_t sequence_id, int pos0, std::span<const int32_t> tokens,
                                  std::span<float> logits) {
  if (absl::Status s = Submit(sequence_id, pos0, tokens, logits); !s.ok()) return s;
  auto done = WaitAny();
  if (!done.ok()) return done.status();
  if (*done != sequence_id) return absl::InternalError("logits for another sequence");
  return absl::OkStatus();
}

void Coordinator::EndSequence(uint64_t sequence_id) {
  history_.erase(sequence_id);
  Start(out_).mutable_end_sequence()->set_sequence_id(sequence_id);
  for (const std::string& id : PlanWorkerIds()) Send(id, out_);
}

void Coordinator::Shutdown(const std::string& reason) {
  Start(out_).mutable_shutdown()->set_reason(reason);
  for (const auto& [id, info] : workers_) Send(id, out_);
}

}  // namespace shardrun
