#include "engine/local_model.h"

namespace shardrun {

absl::StatusOr<std::unique_ptr<LocalModel>> LocalModel::Create(const ModelFile& model,
                                                               Backend& backend, int max_batch,
                                                               int context_length) {
  auto stage = StageForward::Create(model, ModelSlice::Whole(model.config()), backend, max_batch);
  if (!stage.ok()) return stage.status();
  auto cache = (*stage)->NewKvCache(context_length);
  if (!cache.ok()) return cache.status();
  return std::unique_ptr<LocalModel>(new LocalModel(*std::move(stage), *std::move(cache)));
}

absl::Status LocalModel::Compute(int pos0, std::span<const int32_t> tokens,
                                 std::span<float> logits) {
  return stage_->Forward(cache_, pos0, StageInput{.tokens = tokens, .hidden = {}}, logits);
}

}  // namespace shardrun
