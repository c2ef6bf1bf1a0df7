// What the partitioner needs to know about a model: its hyperparameters and how many bytes of
// weights each part (embedding, each layer, head) holds.
//
// A plain struct, so that tests and what-if planning can build one by hand; ShapeOf fills one
// from an opened model file.
#ifndef SHARDRUN_PARTITIONER_MODEL_SHAPE_H_
#define SHARDRUN_PARTITIONER_MODEL_SHAPE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/tensor_type.h"
#include "model/model_config.h"
#include "model/model_file.h"

namespace shardrun {

struct ModelShape {
  std::string name;  // for messages
  int n_layers = 0;
  int dim = 0;
  int kv_dim = 0;
  int hidden_dim = 0;  // per expert for MoE models
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int context_length = 0;  // the model's maximum
  int n_experts = 0;       // 0 = dense
  int n_experts_used = 0;  // experts each token runs through
  bool tied_output = false;

  // Weight bytes (values plus any quantization scales) as stored in the model file.
  std::vector<int64_t> layer_bytes;   // every `blk.N.*` tensor of layer N
  std::vector<int64_t> expert_bytes;  // MoE: one expert's share of layer N's stacked tensors
  int64_t embedding_bytes = 0;        // token_embd.weight
  int64_t output_norm_bytes = 0;      // output_norm.weight
  // output.weight, or token_embd.weight again when tied: a head on another worker than the
  // embedding needs its own copy of the table.
  int64_t output_bytes = 0;

  // Tensor splits (dense models): the part of each layer cut by heads (attn_q/k/v/output) and
  // by feed-forward columns (ffn_gate/up/down); the rest (norms) every member holds whole.
  std::vector<int64_t> attention_bytes;
  std::vector<int64_t> ffn_bytes;
  // Cuts must not split a quantization block of the matrices cut by columns (attn_output,
  // ffn_down): KV heads go in units of `kv_head_unit`, FFN columns in units of
  // `ffn_column_unit`. False: a matrix type that cannot be cut by columns at all.
  int kv_head_unit = 1;
  int ffn_column_unit = 1;
  bool column_splits = true;

  // Weights a worker holds for layers [begin, end).
  int64_t LayerBytes(int begin, int end) const;
  // Weights one token reads in `layer`: all of them for a dense layer; the shared part plus
  // `n_experts_used` experts for a MoE layer.
  int64_t LayerComputeBytes(int layer) const;
  // Every weight once (the tied table counted once): what a single worker holds.
  int64_t TotalWeightBytes() const;
};

// Hyperparameters and per-tensor bytes of an opened (validated) model.
ModelShape ShapeOf(const ModelFile& model);

// The shape a model with `config` would have if every matrix were stored as `matrix_type`
// and the norms (and MoE routers) as f32, as llama.cpp's quantizers do (kQ8Group: with
// export.py's default group of 64 values). For planning before a file exists and for tests.
ModelShape ShapeOf(const ModelConfig& config, TensorType matrix_type);

// OK if `shape` is usable for planning: positive sizes, one byte count per layer, no
// negative counts. Messages name the model.
absl::Status ValidateShape(const ModelShape& shape);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_MODEL_SHAPE_H_
