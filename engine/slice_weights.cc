#include "engine/slice_weights.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

class WeightLoader {
 public:
  WeightLoader(const ModelFile& model, Backend& backend, size_t* bytes)
      : model_(model), backend_(backend), bytes_(bytes) {}

  absl::StatusOr<std::unique_ptr<DeviceWeight>> Load(const std::string& name) {
    const TensorView* view = model_.Find(name);
    if (view == nullptr) {
      return absl::NotFoundError(absl::StrCat(model_.path(), ": missing tensor ", name));
    }
    *bytes_ += view->total_bytes();
    return backend_.LoadWeight(*view);
  }

  // Expert `expert` of the stacked tensor `name`.
  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadExpert(const std::string& name, int expert) {
    const TensorView* view = model_.Find(name);
    if (view == nullptr) {
      return absl::NotFoundError(absl::StrCat(model_.path(), ": missing tensor ", name));
    }
    const TensorView slice = ExpertSlice(*view, expert);
    *bytes_ += slice.total_bytes();
    return backend_.LoadWeight(slice);
  }

 private:
  const ModelFile& model_;
  Backend& backend_;
  size_t* bytes_;
};

#define ASSIGN_WEIGHT(dst, expr)          \
  do {                                    \
    auto weight_or = (expr);              \
    if (!weight_or.ok()) return weight_or.status(); \
    dst = *std::move(weight_or);          \
  } while (0)

}  // namespace

absl::StatusOr<SliceWeights> SliceWeights::Load(const ModelFile& model, const ModelSlice& slice,
                                                Backend& backend) {
  if (absl::Status s = ValidateSlice(slice, model.config()); !s.ok()) return s;
  SliceWeights w;
  WeightLoader loader(model, backend, &w.bytes);
  if (slice.embedding) ASSIGN_WEIGHT(w.token_embedding, loader.Load("token_embd.weight"));
  for (int l = slice.layers.begin; l < slice.layers.end; ++l) {
    LayerWeights& lw = w.layers.emplace_back();
    ASSIGN_WEIGHT(lw.attn_norm, loader.Load(LayerTensorName(l, "attn_norm")));
    ASSIGN_WEIGHT(lw.wq, loader.Load(LayerTensorName(l, "attn_q")));
    ASSIGN_WEIGHT(lw.wk, loader.Load(LayerTensorName(l, "attn_k")));
    ASSIGN_WEIGHT(lw.wv, loader.Load(LayerTensorName(l, "attn_v")));
    ASSIGN_WEIGHT(lw.wo, loader.Load(LayerTensorName(l, "attn_output")));
    ASSIGN_WEIGHT(lw.ffn_norm, loader.Load(LayerTensorName(l, "ffn_norm")));
    if (!model.config().is_moe()) {
      ASSIGN_WEIGHT(lw.ffn_gate, loader.Load(LayerTensorName(l, "ffn_gate")));
      ASSIGN_WEIGHT(lw.ffn_up, loader.Load(LayerTensorName(l, "ffn_up")));
      ASSIGN_WEIGHT(lw.ffn_down, loader.Load(LayerTensorName(l, "ffn_down")));
      continue;
    }
    ASSIGN_WEIGHT(lw.router, loader.Load(LayerTensorName(l, "ffn_gate_inp")));
    for (int e = 0; e < model.config().n_experts; ++e) {
      ExpertWeights& ew = lw.experts.emplace_back();
      ASSIGN_WEIGHT(ew.gate, loader.LoadExpert(LayerTensorName(l, "ffn_gate_exps"), e));
      ASSIGN_WEIGHT(ew.up, loader.LoadExpert(LayerTensorName(l, "ffn_up_exps"), e));
      ASSIGN_WEIGHT(ew.down, loader.LoadExpert(LayerTensorName(l, "ffn_down_exps"), e));
    }
  }
  if (slice.head) {
    ASSIGN_WEIGHT(w.output_norm, loader.Load("output_norm.weight"));
    const bool tied = model.config().tied_output;
    const size_t before = w.bytes;
    ASSIGN_WEIGHT(w.output, loader.Load(tied ? "token_embd.weight" : "output.weight"));
    // A tied table already loaded for the embedding is the same bytes: count it once.
    if (tied && slice.embedding) w.bytes = before;
  }
  spdlog::debug("loaded {} ({:.1f} MiB) on {}", slice.ToString(), w.bytes / 1048576.0,
                backend.name());
  return w;
}

}  // namespace shardrun
