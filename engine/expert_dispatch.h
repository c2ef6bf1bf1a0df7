// Where a MoE layer's experts run when they are not all in this process (--type expert).
//
// The layer's owner computes the router and picks each token's experts (as llama.cpp does);
// the dispatcher runs every chosen (token, expert) pair wherever that expert is held and
// returns each output row unrounded. The owner then adds them up in the same order, with the
// same operations, as the single-process forward pass, so expert sharding changes no bit.
#ifndef SHARDRUN_ENGINE_EXPERT_DISPATCH_H_
#define SHARDRUN_ENGINE_EXPERT_DISPATCH_H_

#include <span>

#include "absl/status/status.h"

namespace shardrun {

// One token's trip through one expert.
struct ExpertCall {
  int token = 0;  // row of the layer's input
  int expert = 0;
};

class ExpertDispatcher {
 public:
  virtual ~ExpertDispatcher() = default;
  // For MoE layer `layer`: outputs[i] (dim floats) = expert calls[i].expert applied to
  // inputs[calls[i].token] (dim floats each: the normed hidden state).
  virtual absl::Status Run(int layer, std::span<const ExpertCall> calls,
                           std::span<const float> inputs, std::span<float> outputs) = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_EXPERT_DISPATCH_H_
