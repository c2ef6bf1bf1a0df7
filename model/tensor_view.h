// A read-only view of one weight tensor inside a memory-mapped model file.
#ifndef SHARDRUN_MODEL_TENSOR_VIEW_H_
#define SHARDRUN_MODEL_TENSOR_VIEW_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/tensor_type.h"

namespace shardrun {

struct TensorView {
  std::string name;  // GGUF naming for every format: "blk.3.attn_q.weight", ...
  TensorType type = TensorType::kF32;
  // GGUF order: shape[0] is the contiguous dimension (columns of a matrix), shape[1] rows,
  // shape[2] the expert index of stacked MoE tensors.
  std::vector<int64_t> shape;
  const void* data = nullptr;  // not owned; lives as long as the model file's mapping
  size_t bytes = 0;            // of `data`
  // kQ8Group only (llama2.c version-2 files): one float scale per `group_size` values.
  const float* group_scales = nullptr;
  int group_size = 0;
  uint64_t file_offset = 0;  // of `data`, for reporting and shard transfer

  int64_t cols() const { return shape.empty() ? 0 : shape[0]; }
  int64_t rows() const {
    int64_t r = 1;
    for (size_t i = 1; i < shape.size(); ++i) r *= shape[i];
    return r;
  }
  int64_t elements() const { return cols() * rows(); }
  // Bytes of data plus scales.
  size_t total_bytes() const {
    return bytes +
           (group_scales ? sizeof(float) * static_cast<size_t>(elements() / group_size) : 0);
  }
};

// Expert `expert` of a stacked MoE tensor (shape {cols, rows, n_experts}): the 2-D matrix
// {cols, rows} whose rows lie contiguously at rows * expert. The caller checks the index.
inline TensorView ExpertSlice(const TensorView& stacked, int expert) {
  TensorView view = stacked;
  const int64_t rows = stacked.shape.size() > 1 ? stacked.shape[1] : 1;
  const size_t bytes = TensorBytes(stacked.type, stacked.cols() * rows);
  view.name = stacked.name + "[" + std::to_string(expert) + "]";
  view.shape = {stacked.cols(), rows};
  view.data = static_cast<const uint8_t*>(stacked.data) + bytes * static_cast<size_t>(expert);
  view.bytes = bytes;
  view.file_offset = stacked.file_offset + bytes * static_cast<uint64_t>(expert);
  return view;
}

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_TENSOR_VIEW_H_
