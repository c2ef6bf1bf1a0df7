#include "partitioner/stage_cost.h"

#include "engine/kv_cache.h"

namespace shardrun {

int64_t ActivationBytes(const ModelShape& shape, int max_batch, bool head) {
  const int64_t per_token = 3 * int64_t{shape.dim}            // x, xb, q
                            + 2 * int64_t{shape.kv_dim}       // k, v
                            + int64_t{shape.dim}              // att
                            + 2 * int64_t{shape.hidden_dim};  // gate, up
  const int64_t logits = head ? shape.vocab_size : 0;
  return static_cast<int64_t>(sizeof(float)) * (max_batch * per_token + logits);
}

int64_t PlanningMemory(const WorkerBudget& worker) {
  if (worker.backend == BackendKind::kVulkan && worker.gpu_memory_bytes > 0) {
    return worker.gpu_memory_bytes;
  }
  return worker.memory_bytes;
}

StageCostModel::StageCostModel(const ModelShape& shape, int context_length, int max_batch,
                               int max_sequences)
    : shape_(shape),
      context_length_(context_length),
      max_batch_(max_batch),
      max_sequences_(max_sequences) {
  weight_prefix_.assign(shape.n_layers + 1, 0);
  compute_prefix_.assign(shape.n_layers + 1, 0);
  for (int layer = 0; layer < shape.n_layers; ++layer) {
    weight_prefix_[layer + 1] = weight_prefix_[layer] + shape.layer_bytes[layer];
    compute_prefix_[layer + 1] = compute_prefix_[layer] + shape.LayerComputeBytes(layer);
  }
}

StageCost StageCostModel::Cost(const ModelSlice& slice) const {
  const LayerRange layers = slice.layers;
  StageCost cost;
  cost.weight_bytes = weight_prefix_[layers.end] - weight_prefix_[layers.begin];
  cost.compute_bytes = compute_prefix_[layers.end] - compute_prefix_[layers.begin];
  if (slice.embedding) {
    cost.weight_bytes += shape_.embedding_bytes;
    // A token reads one row of the table.
    cost.compute_bytes += shape_.embedding_bytes / shape_.vocab_size;
  }
  if (slice.head) {
    // A tied head next to the embedding reads the table that is already there (the model file
    // is mapped once); elsewhere it needs its own copy.
    const bool shares_table = shape_.tied_output && slice.embedding;
    cost.weight_bytes += shape_.output_norm_bytes + (shares_table ? 0 : shape_.output_bytes);
    cost.compute_bytes += shape_.output_norm_bytes + shape_.output_bytes;
  }
  cost.kv_cache_bytes =
      static_cast<int64_t>(KvCache::BytesFor(layers, context_length_, shape_.kv_dim)) *
      max_sequences_;
  if (slice.embedding || slice.head || layers.size() > 0) {
    cost.activation_bytes = ActivationBytes(shape_, max_batch_, slice.head);
  }
  return cost;
}

}  // namespace shardrun
