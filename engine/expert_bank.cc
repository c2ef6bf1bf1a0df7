#include "engine/expert_bank.h"

#include "absl/strings/str_cat.h"
#include "model/tensor_view.h"

namespace shardrun {

absl::StatusOr<std::unique_ptr<ExpertBank>> ExpertBank::Load(
    const ModelFile& model, std::span<const std::pair<int, int>> experts, Backend& backend) {
  const ModelConfig& c = model.config();
  if (!c.is_moe()) return absl::InvalidArgumentError("the model has no experts");
  std::unique_ptr<ExpertBank> bank(new ExpertBank(c, backend));
  for (const auto& [layer, expert] : experts) {
    if (layer < 0 || layer >= c.n_layers || expert < 0 || expert >= c.n_experts) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert ", expert, " of layer ", layer, " is not in the model"));
    }
    ExpertWeights& w = bank->experts_[{layer, expert}];
    const std::pair<const char*, std::unique_ptr<DeviceWeight>*> parts[] = {
        {"ffn_gate_exps", &w.gate}, {"ffn_up_exps", &w.up}, {"ffn_down_exps", &w.down}};
    for (const auto& [name, slot] : parts) {
      const TensorView* stacked = model.Find(LayerTensorName(layer, name));
      if (stacked == nullptr) {
        return absl::NotFoundError(
            absl::StrCat(model.path(), ": missing tensor ", LayerTensorName(layer, name)));
      }
      const TensorView view = ExpertSlice(*stacked, expert);
      bank->bytes_ += view.total_bytes();
      auto weight = backend.LoadWeight(view);
      if (!weight.ok()) return weight.status();
      *slot = *std::move(weight);
    }
  }
  const std::pair<std::unique_ptr<DeviceBuffer>*, int64_t> buffers[] = {
      {&bank->in_, c.dim},
      {&bank->gate_, c.hidden_dim},
      {&bank->up_, c.hidden_dim},
      {&bank->out_, c.dim}};
  for (const auto& [buffer, floats] : buffers) {
    auto b = backend.Allocate(floats);
    if (!b.ok()) return b.status();
    *buffer = *std::move(b);
  }
  return bank;
}

absl::Status ExpertBank::Compute(int layer, int expert, std::span<const float> in,
                                 std::span<float> out) {
  auto it = experts_.find({layer, expert});
  if (it == experts_.end()) {
    return absl::NotFoundError(
        absl::StrCat("expert ", expert, " of layer ", layer, " is not held here"));
  }
  const ExpertWeights& w = it->second;
  Backend& be = backend_;
  // The operations of StageForward::MoeFeedForward, so the result is the same to the bit.
  be.Write(*in_, 0, in.first(static_cast<size_t>(config_.dim)));
  be.MatMul(*gate_, *w.gate, *in_, 1);
  be.MatMul(*up_, *w.up, *in_, 1);
  be.SwiGlu(*gate_, *up_, config_.hidden_dim);
  be.MatMul(*out_, *w.down, *gate_, 1);
  if (absl::Status s = be.Synchronize(); !s.ok()) return s;
  be.Read(*out_, 0, out.first(static_cast<size_t>(config_.dim)));
  ++calls_[{layer, expert}];
  return absl::OkStatus();
}

absl::Status ExpertBank::Run(int layer, std::span<const ExpertCall> calls,
                             std::span<const float> inputs, std::span<float> outputs) {
  const size_t dim = static_cast<size_t>(config_.dim);
  for (size_t i = 0; i < calls.size(); ++i) {
    if (absl::Status s = Compute(layer, calls[i].expert,
                                 inputs.subspan(static_cast<size_t>(calls[i].token) * dim, dim),
                                 outputs.subspan(i * dim, dim));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace shardrun
