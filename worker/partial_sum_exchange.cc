#include "worker/partial_sum_exchange.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "proto/message_codec.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// How often a wait for partial sums asks whether the silent ranks' processes are still there.
constexpr int64_t kPeerCheckMs = 20;

}  // namespace

PartialSumExchange::PartialSumExchange(zmq::context_t& context, const std::string& name,
                                       const PeerSecurity& security)
    : context_(context),
      name_(name),
      security_(security),
      in_(context, zmq::socket_type::pull, name + " reduce") {}

absl::StatusOr<std::unique_ptr<PartialSumExchange>> PartialSumExchange::Create(
    zmq::context_t& context, const std::string& name, const std::string& bind,
    const std::string& advertise_host, const PeerSecurity& security, LinkMode links) {
  std::unique_ptr<PartialSumExchange> x(new PartialSumExchange(context, name, security));
  if (absl::Status s = security.SecureServer(x->in_); !s.ok()) return s;
  // Links carry no transport identity: none beside CURVE.
  x->links_ = security.enabled() ? LinkMode::kNone : links;
  x->in_.OpenInbox(x->links_, advertise_host.empty() ? "127.0.0.1" : advertise_host);
  try {
    x->in_.socket().bind(bind);
    std::string bound = x->in_.socket().get(zmq::sockopt::last_endpoint);
    if (!advertise_host.empty()) {
      bound = absl::StrCat("tcp://", advertise_host, ":", bound.substr(bound.rfind(':') + 1));
    }
    x->endpoint_ = bound;
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot bind the reduce socket: ", e.what()));
  }
  return x;
}

absl::Status PartialSumExchange::Configure(const wire::Assign& assign, int dim,
                                           absl::Duration deadline) {
  out_.clear();
  slots_.clear();
  filled_.clear();
  filled_bytes_.clear();
  round_ = 0;
  plan_id_ = assign.plan_id();
  deadline_ = deadline;
  group_size_ = assign.tensor_split() ? assign.group_endpoints_size() : 1;
  rank_ = assign.rank();
  path_ = assign.reduction();
  if (group_size_ <= 1) return absl::OkStatus();
  if (rank_ < 0 || rank_ >= group_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, " outside a group of ", group_size_));
  }
  if (path_ != wire::REDUCTION_ALL_TO_ALL && path_ != wire::REDUCTION_GATHER_BROADCAST) {
    return absl::InvalidArgumentError("a tensor-parallel group needs a reduction path");
  }
  const size_t floats = static_cast<size_t>(assign.max_batch()) * dim;
  slots_.resize(group_size_);
  filled_.assign(group_size_, {0, 0});
  filled_bytes_.assign(group_size_, {0, 0});
  others_.clear();
  for (int r = 0; r < group_size_; ++r) {
    if (r != rank_) others_.push_back(r);
  }
  out_.resize(group_size_);
  for (int r = 0; r < group_size_; ++r) {
    slots_[r][0].resize(floats);
    slots_[r][1].resize(floats);
    const bool sends_to_r =
        r != rank_ && (path_ == wire::REDUCTION_ALL_TO_ALL || rank_ == 0 || r == 0);
    if (!sends_to_r) continue;
    auto channel = std::make_unique<Channel>(context_, zmq::socket_type::push,
                                             absl::StrCat(name_, " -> rank ", r));
    const std::string key = r < assign.group_curve_keys_size() ? assign.group_curve_keys(r) : "";
    if (absl::Status s = security_.SecurePeerClient(channel->socket(), key,
                                                    absl::StrCat("tensor-parallel rank ", r));
        !s.ok()) {
      return s;
    }
    // Not before the first reduction: by then rank r admits this worker's key.
    channel->ConnectOnFirstSend(assign.group_endpoints(r));
    if (links_ != LinkMode::kNone && r < assign.group_link_endpoints_size()) {
      channel->LinkTo(assign.group_link_endpoints(r), links_);
    }
    out_[r] = std::move(channel);
  }
  return absl::OkStatus();
}

void PartialSumExchange::BeginStep(uint64_t sequence_id, uint64_t step) {
  sequence_id_ = sequence_id;
  step_ = step;
}

ReductionStats PartialSumExchange::TakeStats() {
  const ReductionStats stats = stats_;
  stats_ = ReductionStats();
  return stats;
}

absl::Status PartialSumExchange::Send(int peer, std::span<const float> values, ReductionPoint point,
                                      bool summed) {
  header_.Clear();
  header_.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::PartialSum* p = header_.mutable_partial_sum();
  p->set_round(round_);
  p->set_plan_id(plan_id_);
  p->set_rank(rank_);
  p->set_sequence_id(sequence_id_);
  p->set_step(step_);
  p->set_layer(point.layer);
  p->set_phase(point.phase);
  p->set_summed(summed);
  SetTensorFrame(wire::ACTIVATION_F32, 1, static_cast<int64_t>(values.size()), p->mutable_values());
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(values.data()),
                                       values.size_bytes());
  stats_.bytes_sent += static_cast<int64_t>(bytes.size());
  return out_[peer]->Send(header_, {&bytes, 1});
}

absl::Status PartialSumExchange::Collect(const std::vector<int>& needed, ReductionPoint point,
                                         size_t bytes) {
  const absl::Time deadline = absl::Now() + deadline_;
  auto complete = [&] {
    for (int r : needed) {
      if (filled_[r][round_ % 2] != round_) return false;
    }
    return true;
  };
  while (!complete()) {
    const absl::Duration remaining = deadline - absl::Now();
    if (remaining <= absl::ZeroDuration()) {
      std::vector<int> silent;
      for (int r : needed) {
        if (filled_[r][round_ % 2] != round_) silent.push_back(r);
      }
      return absl::DeadlineExceededError(
          absl::StrCat("tensor-parallel rank(s) ", absl::StrJoin(silent, ", "),
                       " sent no partial sums for layer ", point.layer, " within ",
                       absl::FormatDuration(deadline_)));
    }
    // In slices, between which a silent rank's link is asked whether its process is still
    // there: one that died closed its end, and waiting out the deadline would only hold up
    // the recovery the coordinator has begun (without links, the deadline tells).
    if (!in_.Receive(std::chrono::milliseconds(
            std::clamp<int64_t>(absl::ToInt64Milliseconds(remaining), 1, kPeerCheckMs)))) {
      for (int r : needed) {
        if (filled_[r][round_ % 2] != round_ && out_[r] != nullptr && out_[r]->PeerGone()) {
          return absl::UnavailableError(absl::StrCat(
              "tensor-parallel rank ", r, " is gone (its link closed) at layer ", point.layer));
        }
      }
      continue;
    }
    if (!in_.envelope().has_partial_sum()) {
      in_.DropUnexpected("only partial sums travel on the reduce socket");
      continue;
    }
    const wire::PartialSum& p = in_.envelope().partial_sum();
    const std::span<const uint8_t> frame = in_.tensors()[0];
    if (p.plan_id() != plan_id_ || p.rank() < 0 || p.rank() >= group_size_ || p.rank() == rank_ ||
        (p.round() != round_ && p.round() != round_ + 1) ||
        frame.size() > Slot(p.rank(), p.round()).size() * sizeof(float)) {
      in_.DropUnexpected(absl::StrCat("partial sum from rank ", p.rank(), " for round ", p.round(),
                                      " while at round ", round_));
      continue;
    }
    std::memcpy(Slot(p.rank(), p.round()).data(), frame.data(), frame.size());
    filled_[p.rank()][p.round() % 2] = p.round();
    filled_bytes_[p.rank()][p.round() % 2] = frame.size();
    stats_.received_by_link += in_.last_from_link() ? 1 : 0;
  }
  for (int r : needed) {
    if (filled_bytes_[r][round_ % 2] != bytes) {
      return absl::DataLossError(absl::StrCat("rank ", r, " sent ", filled_bytes_[r][round_ % 2],
                                              " bytes of partial sums for layer ", point.layer,
                                              ", expected ", bytes));
    }
  }
  return absl::OkStatus();
}

absl::Status PartialSumExchange::AllReduce(ReductionPoint point, std::span<float> values) {
  if (group_size_ <= 1) return absl::OkStatus();
  if (values.size() > slots_[0][0].size()) {
    return absl::InvalidArgumentError("partial sums larger than the configured batch");
  }
  const absl::Time start = absl::Now();
  ++round_;
  std::memcpy(Slot(rank_, round_).data(), values.data(), values.size_bytes());
  filled_[rank_][round_ % 2] = round_;
  // Adds every member's partial in rank order into `values`.
  auto sum_all = [&] {
    const float* first = Slot(0, round_).data();
    std::copy(first, first + values.size(), values.begin());
    for (int r = 1; r < group_size_; ++r) {
      const float* p = Slot(r, round_).data();
      for (size_t i = 0; i < values.size(); ++i) values[i] += p[i];
    }
  };
  const std::vector<int>& others = others_;
  absl::Status status;
  if (path_ == wire::REDUCTION_ALL_TO_ALL) {
    for (int r : others) {
      if (status = Send(r, values, point, false); !status.ok()) break;
    }
    if (status.ok()) status = Collect(others, point, values.size_bytes());
    if (status.ok()) sum_all();
  } else if (rank_ == 0) {  // gather, add, broadcast
    status = Collect(others, point, values.size_bytes());
    if (status.ok()) {
      sum_all();
      for (int r : others) {
        if (status = Send(r, values, point, true); !status.ok()) break;
      }
    }
  } else {  // send to the root, receive the sum in the root's slot
    status = Send(0, values, point, false);
    if (status.ok()) status = Collect(root_, point, values.size_bytes());
    if (status.ok()) {
      const float* sum = Slot(0, round_).data();
      std::copy(sum, sum + values.size(), values.begin());
    }
  }
  stats_.wait_us += absl::ToInt64Microseconds(absl::Now() - start);
  return status;
}

}  // namespace shardrun
