// A set of MoE experts, of any layers, loaded into a backend and run one row at a time: what
// a worker holds under --type expert, and what the coordinator uses to calibrate placement.
#ifndef SHARDRUN_ENGINE_EXPERT_BANK_H_
#define SHARDRUN_ENGINE_EXPERT_BANK_H_

#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/expert_dispatch.h"
#include "engine/slice_weights.h"
#include "kernels/backend.h"
#include "model/model_file.h"

namespace shardrun {

class ExpertBank : public ExpertDispatcher {
 public:
  // Loads experts `experts` ((layer, expert) pairs) of `model` into `backend`; both must
  // outlive the result.
  static absl::StatusOr<std::unique_ptr<ExpertBank>> Load(
      const ModelFile& model, std::span<const std::pair<int, int>> experts, Backend& backend);

  bool Holds(int layer, int expert) const { return experts_.contains({layer, expert}); }
  size_t weight_bytes() const { return bytes_; }

  // out (dim) = expert(in (dim)).
  absl::Status Compute(int layer, int expert, std::span<const float> in, std::span<float> out);

  // Runs every call here (all of them must be held).
  absl::Status Run(int layer, std::span<const ExpertCall> calls, std::span<const float> inputs,
                   std::span<float> outputs) override;

  // (layer, expert) -> calls run so far.
  const std::map<std::pair<int, int>, int64_t>& calls() const { return calls_; }

 private:
  ExpertBank(const ModelConfig& config, Backend& backend) : config_(config), backend_(backend) {}

  ModelConfig config_;
  Backend& backend_;
  std::map<std::pair<int, int>, ExpertWeights> experts_;
  std::map<std::pair<int, int>, int64_t> calls_;
  size_t bytes_ = 0;
  std::unique_ptr<DeviceBuffer> in_, gate_, up_, out_;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_EXPERT_BANK_H_
