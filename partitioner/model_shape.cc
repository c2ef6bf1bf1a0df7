#include "partitioner/model_shape.h"

#include <algorithm>
#include <charconv>
#include <numeric>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace shardrun {
namespace {

// Layer index of a "blk.N.<name>" tensor, or -1.
int LayerOfTensor(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  name.remove_prefix(4);
  int layer = -1;
  const auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), layer);
  if (error != std::errc() || end == name.data() + name.size() || *end != '.') return -1;
  return layer;
}

// Bytes of a [rows][cols] matrix of `type`, whole blocks per row.
int64_t MatrixBytes(TensorType type, int64_t cols, int64_t rows) {
  if (type == TensorType::kQ8Group) {
    // int8 values plus one f32 scale per group of export.py's default 64 values.
    constexpr int64_t kGroup = 64;
    return rows * (cols + 4 * ((cols + kGroup - 1) / kGroup));
  }
  const int64_t block = BlockElements(type);
  return rows * ((cols + block - 1) / block) * static_cast<int64_t>(BlockBytes(type));
}

void CopyConfig(const ModelConfig& c, ModelShape& shape) {
  shape.name = c.name;
  shape.n_layers = c.n_layers;
  shape.dim = c.dim;
  shape.kv_dim = c.n_heads > 0 ? c.kv_dim() : 0;  // 0 fails ValidateShape
  shape.hidden_dim = c.hidden_dim;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.vocab_size = c.vocab_size;
  shape.context_length = c.context_length;
  shape.n_experts = c.n_experts;
  shape.n_experts_used = c.n_experts_used;
  shape.tied_output = c.tied_output;
  shape.layer_bytes.assign(std::max(c.n_layers, 0), 0);
  shape.expert_bytes.assign(std::max(c.n_layers, 0), 0);
  shape.attention_bytes.assign(std::max(c.n_layers, 0), 0);
  shape.ffn_bytes.assign(std::max(c.n_layers, 0), 0);
}

// Widens the split units of `shape` so that no cut splits a block of a `type` matrix whose
// columns are cut: `what` is "attn_output" (columns = query heads) or "ffn_down".
void KeepBlocksWhole(ModelShape& shape, std::string_view what, TensorType type) {
  if (type == TensorType::kQ8Group) {
    shape.column_splits = false;
    return;
  }
  const int block = BlockElements(type);
  if (what == "ffn_down") {
    shape.ffn_column_unit = std::lcm(shape.ffn_column_unit, block);
    return;
  }
  if (shape.n_heads <= 0 || shape.n_kv_heads <= 0) return;
  // Columns per KV head: its query heads times the head size.
  const int per_kv_head = shape.dim / shape.n_kv_heads;
  const int unit = block / std::gcd(block, per_kv_head);
  shape.kv_head_unit = std::lcm(shape.kv_head_unit, unit);
}

absl::Status Invalid(const ModelShape& shape, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("model shape", shape.name.empty() ? "" : absl::StrCat(" of ", shape.name), ": ",
                   std::string(problem)));
}

}  // namespace

int64_t ModelShape::LayerBytes(int begin, int end) const {
  return std::accumulate(layer_bytes.begin() + begin, layer_bytes.begin() + end, int64_t{0});
}

int64_t ModelShape::LayerComputeBytes(int layer) const {
  const int64_t idle_experts = n_experts > n_experts_used ? n_experts - n_experts_used : 0;
  const int64_t experts = layer < static_cast<int>(expert_bytes.size()) ? expert_bytes[layer] : 0;
  return layer_bytes[layer] - idle_experts * experts;
}

int64_t ModelShape::TotalWeightBytes() const {
  return embedding_bytes + LayerBytes(0, n_layers) + output_norm_bytes +
         (tied_output ? 0 : output_bytes);
}

ModelShape ShapeOf(const ModelFile& model) {
  ModelShape shape;
  CopyConfig(model.config(), shape);
  if (shape.name.empty()) shape.name = model.path();
  for (const TensorView& t : model.tensors()) {
    const auto bytes = static_cast<int64_t>(t.total_bytes());
    const int layer = LayerOfTensor(t.name);
    if (layer >= 0 && layer < shape.n_layers) {
      shape.layer_bytes[layer] += bytes;
      for (const char* part : {".attn_q.", ".attn_k.", ".attn_v.", ".attn_output."}) {
        if (t.name.find(part) != std::string::npos) shape.attention_bytes[layer] += bytes;
      }
      for (const char* part : {".ffn_gate.", ".ffn_up.", ".ffn_down."}) {
        if (t.name.find(part) != std::string::npos) shape.ffn_bytes[layer] += bytes;
      }
      if (t.name.find(".attn_output.") != std::string::npos) {
        KeepBlocksWhole(shape, "attn_output", t.type);
      } else if (t.name.find(".ffn_down.") != std::string::npos) {
        KeepBlocksWhole(shape, "ffn_down", t.type);
      }
      // Stacked MoE tensors (ffn_{gate,up,down}_exps) hold every expert of the layer.
      if (shape.n_experts > 0 && t.name.ends_with("_exps.weight")) {
        shape.expert_bytes[layer] += bytes / shape.n_experts;
      }
    } else if (t.name == "token_embd.weight") {
      shape.embedding_bytes = bytes;
      if (shape.tied_output) shape.output_bytes = bytes;
    } else if (t.name == "output_norm.weight") {
      shape.output_norm_bytes = bytes;
    } else if (t.name == "output.weight") {
      shape.output_bytes = bytes;
    }
    // Anything else (a GGUF's precomputed rope_freqs, ...) is not loaded by the forward pass.
  }
  return shape;
}

ModelShape ShapeOf(const ModelConfig& config, TensorType matrix_type) {
  ModelShape shape;
  CopyConfig(config, shape);
  const int64_t dim = config.dim, kv_dim = shape.kv_dim, hidden = config.hidden_dim;
  const int64_t norm = MatrixBytes(TensorType::kF32, dim, 1);
  const int64_t attention = 2 * MatrixBytes(matrix_type, dim, dim) +    // q, output
                            2 * MatrixBytes(matrix_type, dim, kv_dim);  // k, v
  // gate and up map dim -> hidden, down maps hidden -> dim.
  const int64_t ffn =
      2 * MatrixBytes(matrix_type, dim, hidden) + MatrixBytes(matrix_type, hidden, dim);
  for (int layer = 0; layer < config.n_layers; ++layer) {
    if (config.n_experts > 0) {
      const int64_t router = MatrixBytes(TensorType::kF32, dim, config.n_experts);
      shape.layer_bytes[layer] = 2 * norm + attention + router + config.n_experts * ffn;
      shape.expert_bytes[layer] = ffn;
    } else {
      shape.layer_bytes[layer] = 2 * norm + attention + ffn;
      shape.ffn_bytes[layer] = ffn;
    }
    shape.attention_bytes[layer] = attention;
  }
  KeepBlocksWhole(shape, "attn_output", matrix_type);
  KeepBlocksWhole(shape, "ffn_down", matrix_type);
  shape.embedding_bytes = MatrixBytes(matrix_type, dim, config.vocab_size);
  shape.output_norm_bytes = norm;
  shape.output_bytes = shape.embedding_bytes;
  return shape;
}

absl::Status ValidateShape(const ModelShape& shape) {
  if (shape.n_layers <= 0 || shape.dim <= 0 || shape.kv_dim <= 0 || shape.hidden_dim <= 0 ||
      shape.vocab_size <= 0 || shape.context_length <= 0) {
    return Invalid(
        shape,
        absl::StrCat("layers (", shape.n_layers, "), dim (", shape.dim, "), kv_dim (", shape.kv_dim,
                     "), hidden_dim (", shape.hidden_dim, "), vocab (", shape.vocab_size,
                     ") and context (", shape.context_length, ") must be positive"));
  }
  if (static_cast<int>(shape.layer_bytes.size()) != shape.n_layers) {
    return Invalid(shape, absl::StrCat("has byte counts for ", shape.layer_bytes.size(),
                                       " layers but ", shape.n_layers, " layers"));
  }
  if (!shape.expert_bytes.empty() &&
      static_cast<int>(shape.expert_bytes.size()) != shape.n_layers) {
    return Invalid(shape, absl::StrCat("has expert byte counts for ", shape.expert_bytes.size(),
                                       " layers but ", shape.n_layers, " layers"));
  }
  if (shape.n_experts < 0 || shape.n_experts_used < 0 || shape.n_experts_used > shape.n_experts) {
    return Invalid(shape, absl::StrCat(shape.n_experts_used, " of ", shape.n_experts,
                                       " experts used per token"));
  }
  for (int layer = 0; layer < shape.n_layers; ++layer) {
    if (shape.layer_bytes[layer] < 0) {
      return Invalid(shape, absl::StrCat("layer ", layer, " has negative bytes"));
    }
    if (shape.LayerComputeBytes(layer) < 0) {
      return Invalid(shape, absl::StrCat("layer ", layer, " has fewer bytes (",
                                         shape.layer_bytes[layer], ") than its experts"));
    }
  }
  if (shape.embedding_bytes < 0 || shape.output_norm_bytes < 0 || shape.output_bytes < 0) {
    return Invalid(shape, "negative embedding or head bytes");
  }
  return absl::OkStatus();
}

}  // namespace shardrun
