#include "engine/slice_weights.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tensor_split.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

class WeightLoader {
 public:
  WeightLoader(const ModelFile& model, Backend& backend, SliceWeights* weights)
      : model_(model), backend_(backend), weights_(weights) {}

  absl::StatusOr<std::unique_ptr<DeviceWeight>> Load(const std::string& name) {
    auto view = Find(name);
    if (!view.ok()) return view.status();
    return LoadView(**view);
  }

  // Rows [begin, end) of the matrix `name`.
  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadRows(const std::string& name, int64_t begin,
                                                         int64_t end) {
    auto view = Find(name);
    if (!view.ok()) return view.status();
    auto rows = RowSlice(**view, begin, end);
    if (!rows.ok()) return rows.status();
    return LoadView(*rows);
  }

  // Columns [begin, end) of the matrix `name`.
  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadColumns(const std::string& name, int64_t begin,
                                                            int64_t end) {
    auto view = Find(name);
    if (!view.ok()) return view.status();
    auto columns = ColumnSlice(**view, begin, end, weights_->copies.emplace_back());
    if (!columns.ok()) return columns.status();
    return LoadView(*columns);
  }

  // Expert `expert` of the stacked tensor `name`.
  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadExpert(const std::string& name, int expert) {
    const TensorView* view = model_.Find(name);
    if (view == nullptr) {
      return absl::NotFoundError(absl::StrCat(model_.path(), ": missing tensor ", name));
    }
    return LoadView(ExpertSlice(*view, expert));
  }

 private:
  absl::StatusOr<const TensorView*> Find(const std::string& name) {
    const TensorView* view = model_.Find(name);
    if (view == nullptr) {
      return absl::NotFoundError(absl::StrCat(model_.path(), ": missing tensor ", name));
    }
    return view;
  }

  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadView(const TensorView& view) {
    weights_->bytes += view.total_bytes();
    return backend_.LoadWeight(view);
  }

  const ModelFile& model_;
  Backend& backend_;
  SliceWeights* weights_;
};

#define ASSIGN_WEIGHT(dst, expr)                    \
  do {                                              \
    auto weight_or = (expr);                        \
    if (!weight_or.ok()) return weight_or.status(); \
    dst = *std::move(weight_or);                    \
  } while (0)

}  // namespace

absl::StatusOr<SliceWeights> SliceWeights::Load(const ModelFile& model, const ModelSlice& slice,
                                                Backend& backend) {
  if (absl::Status s = ValidateSlice(slice, model.config()); !s.ok()) return s;
  const ModelConfig& c = model.config();
  SliceWeights w;
  WeightLoader loader(model, backend, &w);
  if (slice.embedding) ASSIGN_WEIGHT(w.token_embedding, loader.Load("token_embd.weight"));
  for (int l = slice.layers.begin; l < slice.layers.end; ++l) {
    LayerWeights& lw = w.layers.emplace_back();
    ASSIGN_WEIGHT(lw.attn_norm, loader.Load(LayerTensorName(l, "attn_norm")));
    ASSIGN_WEIGHT(lw.ffn_norm, loader.Load(LayerTensorName(l, "ffn_norm")));
    if (slice.split) {  // this member's heads and hidden units only (none: no weights)
      const int hs = c.head_size();
      const IndexRange q = QueryHeads(c, slice.split->kv_heads);
      const IndexRange kv = slice.split->kv_heads;
      const IndexRange f = slice.split->ffn_columns;
      if (kv.size() > 0) {
        ASSIGN_WEIGHT(lw.wq,
                      loader.LoadRows(LayerTensorName(l, "attn_q"), q.begin * hs, q.end * hs));
        ASSIGN_WEIGHT(lw.wk,
                      loader.LoadRows(LayerTensorName(l, "attn_k"), kv.begin * hs, kv.end * hs));
        ASSIGN_WEIGHT(lw.wv,
                      loader.LoadRows(LayerTensorName(l, "attn_v"), kv.begin * hs, kv.end * hs));
        ASSIGN_WEIGHT(
            lw.wo, loader.LoadColumns(LayerTensorName(l, "attn_output"), q.begin * hs, q.end * hs));
      }
      if (f.size() > 0) {
        ASSIGN_WEIGHT(lw.ffn_gate, loader.LoadRows(LayerTensorName(l, "ffn_gate"), f.begin, f.end));
        ASSIGN_WEIGHT(lw.ffn_up, loader.LoadRows(LayerTensorName(l, "ffn_up"), f.begin, f.end));
        ASSIGN_WEIGHT(lw.ffn_down,
                      loader.LoadColumns(LayerTensorName(l, "ffn_down"), f.begin, f.end));
      }
      continue;
    }
    ASSIGN_WEIGHT(lw.wq, loader.Load(LayerTensorName(l, "attn_q")));
    ASSIGN_WEIGHT(lw.wk, loader.Load(LayerTensorName(l, "attn_k")));
    ASSIGN_WEIGHT(lw.wv, loader.Load(LayerTensorName(l, "attn_v")));
    ASSIGN_WEIGHT(lw.wo, loader.Load(LayerTensorName(l, "attn_output")));
    if (!c.is_moe()) {
      ASSIGN_WEIGHT(lw.ffn_gate, loader.Load(LayerTensorName(l, "ffn_gate")));
      ASSIGN_WEIGHT(lw.ffn_up, loader.Load(LayerTensorName(l, "ffn_up")));
      ASSIGN_WEIGHT(lw.ffn_down, loader.Load(LayerTensorName(l, "ffn_down")));
      continue;
    }
    ASSIGN_WEIGHT(lw.router, loader.Load(LayerTensorName(l, "ffn_gate_inp")));
    if (!slice.experts) continue;  // an ExpertDispatcher runs them
    for (int e = 0; e < c.n_experts; ++e) {
      ExpertWeights& ew = lw.experts.emplace_back();
      ASSIGN_WEIGHT(ew.gate, loader.LoadExpert(LayerTensorName(l, "ffn_gate_exps"), e));
      ASSIGN_WEIGHT(ew.up, loader.LoadExpert(LayerTensorName(l, "ffn_up_exps"), e));
      ASSIGN_WEIGHT(ew.down, loader.LoadExpert(LayerTensorName(l, "ffn_down_exps"), e));
    }
  }
  if (slice.head) {
    ASSIGN_WEIGHT(w.output_norm, loader.Load("output_norm.weight"));
    const bool tied = c.tied_output;
    const std::string table = tied ? "token_embd.weight" : "output.weight";
    const size_t before = w.bytes;
    if (slice.split) {
      ASSIGN_WEIGHT(w.output,
                    loader.LoadRows(table, slice.split->vocab.begin, slice.split->vocab.end));
    } else {
      ASSIGN_WEIGHT(w.output, loader.Load(table));
      // A tied table already loaded for the embedding is the same bytes: count it once.
      if (tied && slice.embedding) w.bytes = before;
    }
  }
  spdlog::debug("loaded {} ({:.1f} MiB) on {}", slice.ToString(), w.bytes / 1048576.0,
                backend.name());
  return w;
}

}  // namespace shardrun
