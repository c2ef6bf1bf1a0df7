// The weights of one model slice, loaded into a backend. With a tensor split, each matrix is
// cut to the member's share (engine/tensor_split.h).
#ifndef SHARDRUN_ENGINE_SLICE_WEIGHTS_H_
#define SHARDRUN_ENGINE_SLICE_WEIGHTS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_slice.h"
#include "kernels/backend.h"
#include "model/model_file.h"

namespace shardrun {

// One MoE expert's feed-forward matrices.
struct ExpertWeights {
  std::unique_ptr<DeviceWeight> gate, up, down;
};

struct LayerWeights {
  std::unique_ptr<DeviceWeight> attn_norm, wq, wk, wv, wo;
  std::unique_ptr<DeviceWeight> ffn_norm;
  std::unique_ptr<DeviceWeight> ffn_gate, ffn_up, ffn_down;  // dense models
  std::unique_ptr<DeviceWeight> router;                      // MoE: ffn_gate_inp
  std::vector<ExpertWeights> experts;                        // MoE: every expert
};

struct SliceWeights {
  std::unique_ptr<DeviceWeight> token_embedding;  // if slice.embedding
  std::vector<LayerWeights> layers;               // slice.layers, in order
  std::unique_ptr<DeviceWeight> output_norm;      // if slice.head
  std::unique_ptr<DeviceWeight> output;           // if slice.head (the embedding when tied)
  size_t bytes = 0;                               // of the tensors loaded
  // Column slices of a tensor split, copied out of the file (backends may use them in place).
  std::deque<std::vector<uint8_t>> copies;

  static absl::StatusOr<SliceWeights> Load(const ModelFile& model, const ModelSlice& slice,
                                           Backend& backend);
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_SLICE_WEIGHTS_H_
