#include "coordinator/expert_calibration.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/expert_bank.h"
#include "engine/stage_forward.h"
#include "kernels/cpu/cpu_backend.h"

namespace shardrun {

absl::StatusOr<std::vector<std::vector<double>>> MeasureExpertLoad(const ModelFile& model,
                                                                   std::span<const int32_t> tokens,
                                                                   int threads) {
  const ModelConfig& c = model.config();
  if (!c.is_moe())
    return absl::InvalidArgumentError("--calibrate needs a mixture-of-experts model");
  if (tokens.empty()) return absl::InvalidArgumentError("the calibration text has no tokens");
  tokens = tokens.first(std::min<size_t>(tokens.size(), static_cast<size_t>(c.context_length)));
  auto backend = CpuBackend::Create(threads);
  if (!backend.ok()) return backend.status();
  std::vector<std::pair<int, int>> all;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int e = 0; e < c.n_experts; ++e) all.push_back({l, e});
  }
  // The experts run through a bank that counts its calls: the routing is the forward pass's.
  auto bank = ExpertBank::Load(model, all, **backend);
  if (!bank.ok()) return bank.status();
  ModelSlice slice = ModelSlice::Whole(c);
  slice.experts = false;
  constexpr int kBatch = 32;
  auto stage = StageForward::Create(model, slice, **backend, kBatch);
  if (!stage.ok()) return stage.status();
  (*stage)->set_expert_dispatcher(bank->get());
  auto cache = (*stage)->NewKvCache(static_cast<int>(tokens.size()));
  if (!cache.ok()) return cache.status();
  std::vector<float> logits(c.vocab_size);
  for (size_t pos = 0; pos < tokens.size(); pos += kBatch) {
    const size_t n = std::min<size_t>(kBatch, tokens.size() - pos);
    if (absl::Status s =
            (*stage)->Forward(*cache, static_cast<int>(pos), {tokens.subspan(pos, n), {}}, logits);
        !s.ok()) {
      return s;
    }
  }
  std::vector<std::vector<double>> load(c.n_layers, std::vector<double>(c.n_experts, 0.0));
  for (const auto& [key, calls] : (*bank)->calls()) {
    load[key.first][key.second] = static_cast<double>(calls);
  }
  return load;
}

}  // namespace shardrun
