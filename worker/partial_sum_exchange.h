// The members of a tensor-parallel stage adding up their partial sums over ZeroMQ.
//
// Each member binds one PULL socket (its reduce endpoint, announced at hello) and keeps a PUSH
// socket to each peer it sends to. Per reduction, by the plan's path:
// - all-to-all: every member sends its partial to every other member, then adds all of them
//   in rank order itself (one hop);
// - gather-and-broadcast: members send to rank 0, which adds them in rank order and sends the
//   sum back (two hops).
// Either way every member ends with bit-identical sums. Reductions are numbered (`round`):
// a fast member can be at most one round ahead of a slow one, so each peer has two slots.
// A peer silent past the deadline fails the step with an error that names it.
#ifndef SHARDRUN_WORKER_PARTIAL_SUM_EXCHANGE_H_
#define SHARDRUN_WORKER_PARTIAL_SUM_EXCHANGE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/partial_sum.h"
#include "proto/channel.h"
#include "proto/shardrun.pb.h"
#include "worker/peer_security.h"
#include "zmq.hpp"

namespace shardrun {

// Time spent in reductions and bytes sent, for the step timings.
struct ReductionStats {
  int64_t wait_us = 0;
  int64_t bytes_sent = 0;
  int64_t received_by_link = 0;  // partial sums that came through a link (proto/link.h)
};

class PartialSumExchange : public PartialSumReducer {
 public:
  // Binds the reduce socket on `bind` ("tcp://127.0.0.1:0", ...); `advertise_host` replaces
  // the bound address in endpoint() (empty: as bound). `security` (CURVE or not) must outlive
  // the exchange. Unless `links` is kNone (or CURVE is on), members pass their partial sums
  // through links (proto/link.h): shared memory on one host, TCP between hosts.
  static absl::StatusOr<std::unique_ptr<PartialSumExchange>> Create(
      zmq::context_t& context, const std::string& name, const std::string& bind,
      const std::string& advertise_host, const PeerSecurity& security, LinkMode links);

  const std::string& endpoint() const { return endpoint_; }
  // Where peers reach it by link (Hello.reduce_link_endpoint), or "".
  std::string link_endpoint() const { return in_.inbox() != nullptr ? in_.inbox()->address() : ""; }
  zmq::socket_t& socket() { return in_.socket(); }

  // Joins the group of `assign` (rank, peers, path) for vectors of up to max_batch x dim.
  absl::Status Configure(const wire::Assign& assign, int dim, absl::Duration deadline);
  // Tags the reductions of the next step (for messages and errors).
  void BeginStep(uint64_t sequence_id, uint64_t step);

  absl::Status AllReduce(ReductionPoint point, std::span<float> values) override;

  // Counters since the last call.
  ReductionStats TakeStats();

 private:
  PartialSumExchange(zmq::context_t& context, const std::string& name,
                     const PeerSecurity& security);
  absl::Status Send(int peer, std::span<const float> values, ReductionPoint point, bool summed);
  // Receives until every slot in `needed` of round `round_` is filled (or the deadline).
  // Each slot must hold `bytes`.
  absl::Status Collect(const std::vector<int>& needed, ReductionPoint point, size_t bytes);
  std::vector<float>& Slot(int rank, uint64_t round) { return slots_[rank][round % 2]; }

  zmq::context_t& context_;
  std::string name_;
  const PeerSecurity& security_;
  LinkMode links_ = LinkMode::kNone;
  Channel in_;
  std::string endpoint_;
  int rank_ = 0;
  int group_size_ = 1;
  wire::Reduction path_ = wire::REDUCTION_NONE;
  absl::Duration deadline_ = absl::Seconds(30);
  std::vector<std::unique_ptr<Channel>> out_;             // by rank; null for self and unused peers
  std::vector<std::array<std::vector<float>, 2>> slots_;  // [rank][round % 2]
  std::vector<std::array<uint64_t, 2>> filled_;           // round held by each slot (0 none)
  std::vector<std::array<size_t, 2>> filled_bytes_;       // bytes received into each slot
  std::vector<int> others_;                               // every rank but this one
  const std::vector<int> root_ = {0};
  uint64_t round_ = 0;
  uint64_t plan_id_ = 0;  // partial sums of another plan (before a recovery) are dropped
  uint64_t sequence_id_ = 0;
  uint64_t step_ = 0;
  wire::Envelope header_;
  ReductionStats stats_;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_PARTIAL_SUM_EXCHANGE_H_
