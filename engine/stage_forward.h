// The llama forward pass over one model slice.
//
// Input is token ids (a slice with the embedding) or hidden states from the previous slice;
// output is the logits of the last token (a slice with the head) or hidden states for the
// next slice. Any batch of consecutive positions runs in one call (batched prefill).
//
// A slice with a tensor split computes only its heads, hidden units and vocabulary rows; after
// each of the two projections that produce partial sums it calls its PartialSumReducer.
#ifndef SHARDRUN_ENGINE_STAGE_FORWARD_H_
#define SHARDRUN_ENGINE_STAGE_FORWARD_H_

#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/expert_dispatch.h"
#include "engine/kv_cache.h"
#include "engine/model_slice.h"
#include "engine/partial_sum.h"
#include "engine/slice_weights.h"
#include "kernels/backend.h"
#include "model/model_file.h"

namespace shardrun {

struct StageInput {
  std::span<const int32_t> tokens;  // slices with the embedding: n token ids
  std::span<const float> hidden;    // other slices: n * dim floats
};

class StageForward {
 public:
  // Loads the slice's weights into `backend` and allocates activations for up to
  // `max_batch` tokens per call. `model`, `backend` and `reducer` must outlive the result;
  // `reducer` is required for (only used by) a slice with a tensor split.
  static absl::StatusOr<std::unique_ptr<StageForward>> Create(const ModelFile& model,
                                                              const ModelSlice& slice,
                                                              Backend& backend, int max_batch,
                                                              PartialSumReducer* reducer = nullptr);

  // A KV cache for one sequence through this slice, of `context_length` positions (0 = the
  // model's context length).
  absl::StatusOr<KvCache> NewKvCache(int context_length = 0) const;

  // Runs n tokens at positions pos0 .. pos0+n-1 (n = tokens or hidden rows, 1 <= n <=
  // max_batch; pos0 + n <= cache context). `output` receives vocab_size logits of the last
  // token (slice.head; with a split only its vocabulary rows) or n * dim hidden floats.
  absl::Status Forward(KvCache& cache, int pos0, StageInput input, std::span<float> output);

  // A slice without its experts (slice.experts false) runs them through `dispatcher`, which
  // must outlive this object.
  void set_expert_dispatcher(ExpertDispatcher* dispatcher) { dispatcher_ = dispatcher; }

  const ModelSlice& slice() const { return slice_; }
  const ModelConfig& config() const { return config_; }
  int max_batch() const { return max_batch_; }
  size_t weight_bytes() const { return weights_.bytes; }
  // Floats Forward writes for n tokens.
  size_t OutputSize(int n) const;

 private:
  StageForward(const ModelConfig& config, const ModelSlice& slice, Backend& backend, int max_batch,
               PartialSumReducer* reducer);
  absl::Status AllocateActivations();
  // Replaces the partial sums in xb_ (n tokens) by the group's sums (tensor splits only).
  absl::Status Reduce(ReductionPoint point, int n);
  // The MoE feed-forward of layer `layer` for n tokens: xb_ (normed) in, moe_out_ out.
  absl::Status MoeFeedForward(int layer, const LayerWeights& w, int n);

  ModelConfig config_;
  ModelSlice slice_;
  Backend& backend_;
  int max_batch_;
  PartialSumReducer* reducer_;
  // What this slice computes of each layer: all of it, or its tensor split's share.
  int n_heads_ = 0;     // query heads
  int n_kv_heads_ = 0;  // key/value heads
  int hidden_dim_ = 0;  // feed-forward hidden units
  int vocab_rows_ = 0;  // logits (head slices)
  SliceWeights weights_;
  // Activations, [max_batch][width] each.
  std::unique_ptr<DeviceBuffer> x_;       // residual stream, dim
  std::unique_ptr<DeviceBuffer> xb_;      // normed input / block output, dim
  std::unique_ptr<DeviceBuffer> q_;       // dim
  std::unique_ptr<DeviceBuffer> k_;       // kv_dim
  std::unique_ptr<DeviceBuffer> v_;       // kv_dim
  std::unique_ptr<DeviceBuffer> att_;     // attention output, dim
  std::unique_ptr<DeviceBuffer> gate_;    // hidden_dim
  std::unique_ptr<DeviceBuffer> up_;      // hidden_dim
  std::unique_ptr<DeviceBuffer> logits_;  // vocab_size, head slices only (last token)
  // MoE models only.
  std::unique_ptr<DeviceBuffer> router_;       // [max_batch][n_experts] router logits
  std::unique_ptr<DeviceBuffer> ex_in_;        // one token's normed input, dim
  std::unique_ptr<DeviceBuffer> ex_out_;       // one expert's output, dim
  std::unique_ptr<DeviceBuffer> moe_out_;      // weighted sum of the experts, [max_batch][dim]
  std::vector<float> router_host_;             // router logits read back for top-k selection
  std::vector<std::pair<float, int>> ranked_;  // (probability, expert), sized once
  ExpertDispatcher* dispatcher_ = nullptr;
  std::vector<ExpertCall> expert_calls_;  // [max_batch * k]: each token's chosen experts
  std::vector<float> expert_weights_;     // their weights in the sum
  std::vector<float> expert_in_host_;     // [max_batch][dim] normed inputs (dispatched)
  std::vector<float> expert_out_host_;    // [max_batch * k][dim] outputs (dispatched)
  std::vector<float> partial_host_;       // tensor splits: partial sums on the host
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_STAGE_FORWARD_H_
