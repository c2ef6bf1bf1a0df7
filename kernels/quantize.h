// Scalar reference conversions between float32 and the stored tensor types.
//
// These follow ggml's reference code (quantize_row_q8_0_ref, quantize_row_q4_0_ref), so a
// tensor written by `shardrun synth` equals what llama.cpp's tools would write for the same
// floats. They are not on the hot path: the CPU backend has vectorised kernels of its own.
#ifndef SHARDRUN_KERNELS_QUANTIZE_H_
#define SHARDRUN_KERNELS_QUANTIZE_H_

#include <cstdint>
#include <span>

#include "kernels/tensor_type.h"

namespace shardrun {

// Writes `x.size()` values (a multiple of BlockElements(type)) to `out` in `type`'s layout;
// `out` must hold TensorBytes(type, x.size()) bytes. kQ8Group is not supported here.
void QuantizeRow(TensorType type, std::span<const float> x, void* out);

// Reads `out.size()` values of `type` starting at element 0 of `data`. For kQ8Group,
// `group_scales` and `group_size` describe the scales of `data`'s groups.
void DequantizeRow(TensorType type, const void* data, std::span<float> out,
                   const float* group_scales = nullptr, int group_size = 0);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_QUANTIZE_H_
