// The cost model of one stage: the memory a slice of the model needs on its worker, and the
// weight bytes it reads per token (its share of the time of a forward pass).
#ifndef SHARDRUN_PARTITIONER_STAGE_COST_H_
#define SHARDRUN_PARTITIONER_STAGE_COST_H_

#include <cstdint>
#include <vector>

#include "engine/model_slice.h"
#include "partitioner/model_shape.h"
#include "partitioner/shard_plan.h"

namespace shardrun {

struct StageCost {
  int64_t weight_bytes = 0;
  int64_t kv_cache_bytes = 0;
  int64_t activation_bytes = 0;
  // Weights one token reads: a forward pass is memory-bound, so this is its time up to the
  // worker's speed.
  int64_t compute_bytes = 0;

  int64_t memory_bytes() const { return weight_bytes + kv_cache_bytes + activation_bytes; }
};

// Bytes of the activation buffers StageForward::Create allocates for `max_batch` tokens per
// call: per token the residual stream x, the normed input xb, q and the attention output
// (dim each), k and v (kv_dim each), gate and up (hidden_dim each); plus vocab_size logits of
// the last token on the stage with the head. Keep in step with
// StageForward::AllocateActivations.
int64_t ActivationBytes(const ModelShape& shape, int max_batch, bool head);

// The memory of `worker` the plan may fill: its GPU memory when it computes with Vulkan and
// reported some (weights, caches and activations all live there), its host memory otherwise.
int64_t PlanningMemory(const WorkerBudget& worker);

// Costs of any slice of one model in O(1), from prefix sums over its layers.
class StageCostModel {
 public:
  // Each stage keeps `max_sequences` KV caches of `context_length` positions and activations
  // for `max_batch` tokens. `shape` must pass ValidateShape and outlive this object.
  StageCostModel(const ModelShape& shape, int context_length, int max_batch, int max_sequences);

  // A slice with a tensor split holds its share of the attention and FFN matrices, of the KV
  // cache and of the head.
  StageCost Cost(const ModelSlice& slice) const;
  const ModelShape& shape() const { return shape_; }
  int context_length() const { return context_length_; }
  int max_batch() const { return max_batch_; }
  int max_sequences() const { return max_sequences_; }

 private:
  const ModelShape& shape_;
  int context_length_;
  int max_batch_;
  int max_sequences_;
  std::vector<int64_t> weight_prefix_;     // [i] = weights of layers 0 .. i-1
  std::vector<int64_t> compute_prefix_;    // [i] = per-token reads of layers 0 .. i-1
  std::vector<int64_t> attention_prefix_;  // [i] = attention matrices of layers 0 .. i-1
  std::vector<int64_t> ffn_prefix_;        // [i] = dense FFN matrices of layers 0 .. i-1
};

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_STAGE_COST_H_
