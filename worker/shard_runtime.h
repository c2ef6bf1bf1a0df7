// What a worker computes once it has a shard: the slice's weights in a backend, one KV cache
// per live sequence, and the step that turns an incoming activation into the outgoing one.
#ifndef SHARDRUN_WORKER_SHARD_RUNTIME_H_
#define SHARDRUN_WORKER_SHARD_RUNTIME_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/expert_bank.h"
#include "engine/kv_cache.h"
#include "engine/stage_forward.h"
#include "kernels/backend.h"
#include "kernels/backend_factory.h"
#include "model/model_file.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

// The tensors of `model` that `slice` reads, in file order: what a worker pages in, and what
// the coordinator streams to a worker without the model file.
std::vector<const TensorView*> SliceTensors(const ModelFile& model, const ModelSlice& slice);

// The part of the model `assign` gives a worker.
ModelSlice SliceOf(const wire::Assign& assign);

class ShardRuntime {
 public:
  // Loads the slice `assign` describes from `model` (which must stay open) into a new
  // backend made by CreateBackend(`backend`), and the experts it holds (expert plans). A
  // tensor-split slice adds its partial sums through `reducer`; a slice whose experts are
  // elsewhere runs them through `experts`; both must outlive the result.
  // `progress(done, total)` reports bytes paged in.
  static absl::StatusOr<std::unique_ptr<ShardRuntime>> Load(
      const ModelFile& model, const wire::Assign& assign, const BackendOptions& backend,
      PartialSumReducer* reducer, ExpertDispatcher* experts,
      const std::function<void(int64_t done, int64_t total)>& progress);

  // Runs one activation through the slice. Input: token ids (a first stage) or the hidden
  // frame; output() then holds the logits (a last stage) or the hidden state.
  absl::Status Step(const wire::Activation& activation, std::span<const uint8_t> hidden_frame);
  std::span<const float> output() const { return {output_.data(), output_size_}; }

  void EndSequence(uint64_t sequence_id) { caches_.erase(sequence_id); }
  // Testing (worker/fault_injection.h): the backend's device fails from now on.
  absl::Status InjectDeviceFault(DeviceFault fault);
  // False for a worker that only holds experts.
  bool has_stage() const { return stage_ != nullptr; }
  const ModelSlice& slice() const { return slice_; }
  ExpertBank* expert_bank() const { return bank_.get(); }
  const wire::Assign& assign() const { return assign_; }
  int dim() const { return dim_; }

 private:
  ShardRuntime() = default;
  absl::StatusOr<KvCache*> CacheFor(uint64_t sequence_id);

  wire::Assign assign_;
  std::unique_ptr<Backend> backend_;
  ModelSlice slice_;
  int dim_ = 0;
  std::unique_ptr<StageForward> stage_;  // null: experts only
  std::unique_ptr<ExpertBank> bank_;     // null: no experts
  std::map<uint64_t, KvCache> caches_;
  std::vector<float> input_;   // decoded hidden state, reused
  std::vector<float> output_;  // sized for max_batch, reused
  size_t output_size_ = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_SHARD_RUNTIME_H_
