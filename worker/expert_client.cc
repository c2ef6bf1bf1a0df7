#include "worker/expert_client.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/device_failure.h"
#include "proto/message_codec.h"
#include "spdlog/spdlog.h"

namespace shardrun {

ExpertClient::ExpertClient(zmq::context_t& context, const std::string& name,
                           const PeerSecurity& security)
    : context_(context),
      name_(name),
      security_(security),
      in_(context, zmq::socket_type::pull, name + " experts") {}

absl::StatusOr<std::unique_ptr<ExpertClient>> ExpertClient::Create(
    zmq::context_t& context, const std::string& name, const std::string& bind,
    const std::string& advertise_host, const PeerSecurity& security, LinkMode links) {
  std::unique_ptr<ExpertClient> c(new ExpertClient(context, name, security));
  if (absl::Status s = security.SecureServer(c->in_); !s.ok()) return s;
  // Links carry no transport identity: none beside CURVE.
  c->links_ = security.enabled() ? LinkMode::kNone : links;
  c->in_.OpenInbox(c->links_, advertise_host.empty() ? "127.0.0.1" : advertise_host);
  try {
    c->in_.socket().bind(bind);
    std::string bound = c->in_.socket().get(zmq::sockopt::last_endpoint);
    if (!advertise_host.empty()) {
      bound = absl::StrCat("tcp://", advertise_host, ":", bound.substr(bound.rfind(':') + 1));
    }
    c->endpoint_ = bound;
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot bind the expert socket: ", e.what()));
  }
  return c;
}

absl::Status ExpertClient::Configure(const wire::Assign& assign, ExpertBank* bank, int dim,
                                     absl::Duration deadline) {
  bank_ = bank;
  dim_ = dim;
  deadline_ = deadline;
  self_ = assign.worker_index();
  endpoints_.assign(assign.expert_endpoints().begin(), assign.expert_endpoints().end());
  curve_keys_.assign(assign.expert_curve_keys().begin(), assign.expert_curve_keys().end());
  curve_keys_.resize(endpoints_.size());  // none without CURVE
  link_endpoints_.assign(assign.expert_link_endpoints().begin(),
                         assign.expert_link_endpoints().end());
  link_endpoints_.resize(endpoints_.size());
  peers_.clear();
  peers_.resize(endpoints_.size());
  pending_.assign(endpoints_.size(), Pending());
  call_counts_.assign(endpoints_.size(), 0);
  n_experts_ = 0;
  int n_layers = 0;
  for (const wire::ExpertHolders& h : assign.expert_map()) {
    n_experts_ = std::max(n_experts_, h.expert() + 1);
    n_layers = std::max(n_layers, h.layer() + 1);
  }
  holders_.assign(static_cast<size_t>(n_layers) * n_experts_, {});
  turn_.assign(holders_.size(), 0);
  for (const wire::ExpertHolders& h : assign.expert_map()) {
    if (h.layer() < 0 || h.expert() < 0) return absl::InvalidArgumentError("bad expert map");
    std::vector<int>& list = holders_[static_cast<size_t>(h.layer()) * n_experts_ + h.expert()];
    for (int w : h.workers()) {
      if (w < 0 || w >= static_cast<int>(endpoints_.size())) {
        return absl::InvalidArgumentError(absl::StrCat("expert map names worker ", w));
      }
      list.push_back(w);
    }
  }
  return absl::OkStatus();
}

Channel* ExpertClient::Peer(int worker) {
  if (peers_[worker] == nullptr) {
    auto channel = std::make_unique<Channel>(context_, zmq::socket_type::push,
                                             absl::StrCat(name_, " -> experts of ", worker));
    if (absl::Status s = security_.SecurePeerClient(channel->socket(), curve_keys_[worker],
                                                    absl::StrCat("expert worker ", worker));
        !s.ok()) {
      spdlog::error("{}: {}", name_, std::string(s.message()));
      return nullptr;
    }
    try {
      channel->socket().set(zmq::sockopt::linger, 0);
      channel->socket().connect(endpoints_[worker]);
    } catch (const zmq::error_t& e) {
      spdlog::error("{}: cannot connect to {}: {}", name_, endpoints_[worker], e.what());
      return nullptr;
    }
    if (links_ != LinkMode::kNone) channel->LinkTo(link_endpoints_[worker], links_);
    peers_[worker] = std::move(channel);
  }
  return peers_[worker].get();
}

void ExpertClient::TakeCallCounts(google::protobuf::RepeatedField<int64_t>* counts) {
  counts->Add(call_counts_.begin(), call_counts_.end());
  std::fill(call_counts_.begin(), call_counts_.end(), 0);
}

absl::Status ExpertClient::Run(int layer, std::span<const ExpertCall> calls,
                               std::span<const float> inputs, std::span<float> outputs) {
  const size_t dim = static_cast<size_t>(dim_);
  for (Pending& p : pending_) {
    p.calls.clear();
    p.answered = true;
  }
  // Who runs each call: a holder of its expert, replicas in turn.
  for (size_t i = 0; i < calls.size(); ++i) {
    const size_t key = static_cast<size_t>(layer) * n_experts_ + calls[i].expert;
    if (key >= holders_.size() || holders_[key].empty()) {
      return absl::InternalError(
          absl::StrCat("no worker holds expert ", calls[i].expert, " of layer ", layer));
    }
    const std::vector<int>& holders = holders_[key];
    const int worker = holders[turn_[key]++ % holders.size()];
    pending_[worker].calls.push_back(i);
    call_counts_[worker]++;
  }
  run_outputs_ = outputs;
  run_error_.clear();
  // Requests out first, so the holders work while this worker runs its own calls.
  for (size_t w = 0; w < pending_.size(); ++w) {
    Pending& p = pending_[w];
    if (p.calls.empty() || static_cast<int>(w) == self_) continue;
    rows_.resize(p.calls.size() * dim);
    out_.Clear();
    out_.set_protocol_version(wire::PROTOCOL_VERSION);
    wire::ExpertRequest* r = out_.mutable_expert_request();
    p.request_id = next_request_++;
    r->set_request_id(p.request_id);
    r->set_layer(layer);
    r->set_from_worker(self_);
    for (size_t j = 0; j < p.calls.size(); ++j) {
      const ExpertCall& call = calls[p.calls[j]];
      r->add_experts(call.expert);
      std::memcpy(rows_.data() + j * dim, inputs.data() + static_cast<size_t>(call.token) * dim,
                  dim * sizeof(float));
    }
    SetTensorFrame(wire::ACTIVATION_F32, static_cast<int64_t>(p.calls.size()), dim_,
                   r->mutable_inputs());
    const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(rows_.data()),
                                         rows_.size() * sizeof(float));
    Channel* peer = Peer(static_cast<int>(w));
    if (peer == nullptr) return absl::UnavailableError("cannot reach an expert holder");
    if (absl::Status s = peer->Send(out_, {&bytes, 1}); !s.ok()) return s;
    p.answered = false;
  }
  for (size_t i : pending_[self_].calls) {
    if (bank_ == nullptr)
      return absl::InternalError("expert map sends calls to a worker without experts");
    const ExpertCall& call = calls[i];
    if (absl::Status s = bank_->Compute(layer, call.expert,
                                        inputs.subspan(static_cast<size_t>(call.token) * dim, dim),
                                        outputs.subspan(i * dim, dim));
        !s.ok()) {
      return s;
    }
  }
  const absl::Time deadline = absl::Now() + deadline_;
  auto waiting = [&] {
    for (const Pending& p : pending_) {
      if (!p.answered) return true;
    }
    return false;
  };
  while (waiting()) {
    if (!run_error_.empty()) return absl::InternalError(run_error_);
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      std::string silent;
      for (size_t w = 0; w < pending_.size(); ++w) {
        if (!pending_[w].answered) absl::StrAppend(&silent, silent.empty() ? "" : ", ", w);
      }
      return absl::DeadlineExceededError(absl::StrCat("expert holders (plan workers ", silent,
                                                      ") did not answer for layer ", layer,
                                                      " within ", absl::FormatDuration(deadline_)));
    }
    if (in_.Receive(
            std::chrono::milliseconds(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))))) {
      HandleMessage();
    }
  }
  if (!run_error_.empty()) return absl::InternalError(run_error_);
  return absl::OkStatus();
}

void ExpertClient::ServeQueued() {
  while (in_.ReceiveNow()) HandleMessage();
}

absl::Status ExpertClient::TakeDeviceFailure() {
  absl::Status failure = std::move(device_failure_);
  device_failure_ = absl::OkStatus();
  return failure;
}

void ExpertClient::HandleMessage() {
  const wire::Envelope& env = in_.envelope();
  if (env.has_expert_request()) {
    if (absl::Status s = Serve(env.expert_request(), in_.tensors()[0]); !s.ok()) {
      spdlog::warn("{}: {}", name_, std::string(s.message()));
    }
    return;
  }
  if (!env.has_expert_reply()) {
    in_.DropUnexpected("only expert requests and replies travel on the expert socket");
    return;
  }
  const wire::ExpertReply& reply = env.expert_reply();
  for (Pending& p : pending_) {
    if (p.answered || p.request_id != reply.request_id()) continue;
    p.answered = true;
    if (!reply.error().empty()) {
      run_error_ = absl::StrCat("expert holder: ", reply.error());
      return;
    }
    const size_t dim = static_cast<size_t>(dim_);
    const std::span<const uint8_t> frame =
        in_.tensors().empty() ? std::span<const uint8_t>() : in_.tensors()[0];
    if (frame.size() != p.calls.size() * dim * sizeof(float)) {
      run_error_ =
          absl::StrCat("expert reply of ", frame.size(), " bytes for ", p.calls.size(), " rows");
      return;
    }
    const float* rows = reinterpret_cast<const float*>(frame.data());
    for (size_t j = 0; j < p.calls.size(); ++j) {
      std::memcpy(run_outputs_.data() + p.calls[j] * dim, rows + j * dim, dim * sizeof(float));
    }
    return;
  }
  in_.DropUnexpected(absl::StrCat("expert reply ", reply.request_id(), " nobody waits for"));
}

absl::Status ExpertClient::Serve(const wire::ExpertRequest& request,
                                 std::span<const uint8_t> rows) {
  const int from = request.from_worker();
  if (from < 0 || from >= static_cast<int>(endpoints_.size())) {
    in_.DropUnexpected(absl::StrCat("expert request from unknown worker ", from));
    return absl::OkStatus();
  }
  if (before_serve_) before_serve_(++requests_served_);
  const size_t dim = static_cast<size_t>(dim_);
  const size_t n = static_cast<size_t>(request.experts_size());
  out_.Clear();
  out_.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::ExpertReply* reply = out_.mutable_expert_reply();
  reply->set_request_id(request.request_id());
  absl::Status status;
  if (bank_ == nullptr || rows.size() != n * dim * sizeof(float)) {
    status = absl::FailedPreconditionError("this worker holds no experts for that request");
  }
  served_.resize(n * dim);
  const float* in = reinterpret_cast<const float*>(rows.data());
  for (size_t j = 0; status.ok() && j < n; ++j) {
    status = bank_->Compute(request.layer(), request.experts(j),
                            std::span<const float>(in + j * dim, dim),
                            std::span<float>(served_.data() + j * dim, dim));
  }
  if (IsDeviceFailure(status) && device_failure_.ok()) device_failure_ = status;
  Channel* peer = Peer(from);
  if (peer == nullptr) return absl::UnavailableError("cannot answer an expert request");
  if (!status.ok()) {
    reply->set_error(std::string(status.message()));
    return peer->Send(out_);
  }
  SetTensorFrame(wire::ACTIVATION_F32, static_cast<int64_t>(n), dim_, reply->mutable_outputs());
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(served_.data()),
                                       served_.size() * sizeof(float));
  return peer->Send(out_, {&bytes, 1});
}

}  // namespace shardrun
