// How the members of a tensor-parallel group add up their partial results.
//
// Each member computes, of a layer, the attention output projection of its own heads and the
// FFN down projection of its own hidden units: partial sums of the full vectors. The forward
// pass hands each one to a PartialSumReducer, which replaces it by the sum over the group —
// added in the same (rank) order on every member, so every member continues from bit-identical
// residuals. The worker implements it over ZeroMQ (worker/partial_sum_exchange.h); tests run a
// group in threads.
#ifndef SHARDRUN_ENGINE_PARTIAL_SUM_H_
#define SHARDRUN_ENGINE_PARTIAL_SUM_H_

#include <span>

#include "absl/status/status.h"

namespace shardrun {

// Where in the forward pass a reduction happens, for tagging messages and errors.
struct ReductionPoint {
  int layer = 0;
  int phase = 0;  // 0: after attention, 1: after the feed-forward
};

class PartialSumReducer {
 public:
  virtual ~PartialSumReducer() = default;
  // Replaces `values` (this member's partial sums, [n_tokens][dim]) by the group's sums.
  virtual absl::Status AllReduce(ReductionPoint point, std::span<float> values) = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_PARTIAL_SUM_H_
