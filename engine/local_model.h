// A whole model in this process: one StageForward over every layer and one KV cache.
#ifndef SHARDRUN_ENGINE_LOCAL_MODEL_H_
#define SHARDRUN_ENGINE_LOCAL_MODEL_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"
#include "engine/logits_source.h"
#include "engine/stage_forward.h"

namespace shardrun {

class LocalModel : public LogitsSource {
 public:
  // context_length 0 = the model's.
  static absl::StatusOr<std::unique_ptr<LocalModel>> Create(const ModelFile& model,
                                                            Backend& backend, int max_batch,
                                                            int context_length);

  absl::Status Compute(int pos0, std::span<const int32_t> tokens, std::span<float> logits) override;
  int max_batch() const override { return stage_->max_batch(); }
  int context_length() const override { return cache_.context_length(); }
  int vocab_size() const override { return stage_->config().vocab_size; }

 private:
  LocalModel(std::unique_ptr<StageForward> stage, KvCache cache)
      : stage_(std::move(stage)), cache_(std::move(cache)) {}

  std::unique_ptr<StageForward> stage_;
  KvCache cache_;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_LOCAL_MODEL_H_
