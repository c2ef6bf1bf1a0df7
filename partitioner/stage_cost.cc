#include "partitioner/stage_cost.h"

#include <algorithm>

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
  attention_prefix_.assign(shape.n_layers + 1, 0);
  ffn_prefix_.assign(shape.n_layers + 1, 0);
  auto at = [](const std::vector<int64_t>& v, int i) {
    return i < static_cast<int>(v.size()) ? v[i] : 0;
  };
  for (int layer = 0; layer < shape.n_layers; ++layer) {
    weight_prefix_[layer + 1] = weight_prefix_[layer] + shape.layer_bytes[layer];
    compute_prefix_[layer + 1] = compute_prefix_[layer] + shape.LayerComputeBytes(layer);
    attention_prefix_[layer + 1] = attention_prefix_[layer] + at(shape.attention_bytes, layer);
    ffn_prefix_[layer + 1] = ffn_prefix_[layer] + at(shape.ffn_bytes, layer);
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
  int kv_dim = shape_.kv_dim;
  if (slice.split) {
    // The share of the matrices cut by heads and by columns this member leaves to the others.
    const double heads_away =
        1.0 - static_cast<double>(slice.split->kv_heads.size()) / std::max(shape_.n_kv_heads, 1);
    const double columns_away =
        1.0 - static_cast<double>(slice.split->ffn_columns.size()) / std::max(shape_.hidden_dim, 1);
    const auto away = static_cast<int64_t>(
        heads_away *
            static_cast<double>(attention_prefix_[layers.end] - attention_prefix_[layers.begin]) +
        columns_away * static_cast<double>(ffn_prefix_[layers.end] - ffn_prefix_[layers.begin]));
    cost.weight_bytes -= away;
    cost.compute_bytes -= away;
    if (slice.head) {
      const auto rows_away = static_cast<int64_t>(
          static_cast<double>(shape_.output_bytes) *
          (1.0 - static_cast<double>(slice.split->vocab.size()) / shape_.vocab_size));
      cost.weight_bytes -= slice.embedding && shape_.tied_output ? 0 : rows_away;
      cost.compute_bytes -= rows_away;
    }
    kv_dim = shape_.n_kv_heads > 0
                 ? shape_.kv_dim / shape_.n_kv_heads * slice.split->kv_heads.size()
                 : 0;
  }
  cost.kv_cache_bytes =
      static_cast<int64_t>(KvCache::BytesFor(layers, context_length_, kv_dim)) * max_sequences_;
  if (slice.embedding || slice.head || layers.size() > 0) {
    cost.activation_bytes = ActivationBytes(shape_, max_batch_, slice.head);
    // The partial sums a tensor-split slice passes through the host.
    if (slice.split) cost.activation_bytes += int64_t{4} * max_batch_ * shape_.dim;
  }
  return cost;
}

}  // namespace shardrun
