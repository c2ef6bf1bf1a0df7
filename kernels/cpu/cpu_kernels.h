// The CPU backend's per-instruction-set kernels, as one table of function pointers per level.
//
// Internal to the CPU backend (and its tests and benchmarks). A matrix product is done in two
// steps: the activations are first brought into the form the weight type's dot product reads
// (rounded to F16/BF16, or quantized to int8 blocks with scales, as llama.cpp and runq.c do),
// then the matmul kernel runs over a range of weight rows for all tokens. The quantized
// activation layout belongs to a level (the AVX-512 Q4_0 kernel interleaves block halves), so
// the matmul kernel of a level must be fed by the same level's quantizer.
#ifndef SHARDRUN_KERNELS_CPU_CPU_KERNELS_H_
#define SHARDRUN_KERNELS_CPU_CPU_KERNELS_H_

#include <cstdint>
#include <string_view>

#include "kernels/cpu/cpu_level.h"
#include "kernels/tensor_type.h"

namespace shardrun {

struct MatMulArgs {
  // Weights: row r starts at w + r * w_row_bytes and holds `cols` values. With `tiled`
  // (on levels that ask for it), the complete tiles of TileRowsOf(type) rows are in the
  // layout of weight_tiles.h.
  const uint8_t* w = nullptr;
  int64_t w_row_bytes = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  bool tiled = false;
  // kQ8Group: the scales of row r start at w_scales + r * (cols / group_size).
  const float* w_scales = nullptr;
  int group_size = 0;
  // Activations of token t: floats at xf + t * x_stride (F32, F16, BF16 weights, already
  // rounded to the weight's precision), or int8 values at xq + t * x_stride with one scale
  // per block (Q8_0, Q4_0: 32 values) or group (kQ8Group) at xs + t * xs_stride, and for
  // Q8_0 / Q4_0 the sum of each block's int8 values at xsum + t * xs_stride.
  const float* xf = nullptr;
  const int8_t* xq = nullptr;
  const float* xs = nullptr;
  const int32_t* xsum = nullptr;
  int64_t x_stride = 0;
  int64_t xs_stride = 0;
  int n = 0;  // tokens
  // out[t * out_stride + r].
  float* out = nullptr;
  int64_t out_stride = 0;
};

// Computes the outputs of rows [row_begin, row_end) for all n tokens.
using MatMulFn = void (*)(const MatMulArgs& args, int64_t row_begin, int64_t row_end);

struct CpuKernels {
  std::string_view name;
  // out[i] = x[i] rounded to F16 / BF16 (nearest even) and widened back to float.
  void (*round_f16)(const float* x, float* out, int64_t count);
  void (*round_bf16)(const float* x, float* out, int64_t count);
  // Quantizes one activation row of `cols` values (a multiple of 32) to Q8_0 blocks the way
  // llama.cpp's AVX2 quantize_row_q8_0 does: qs gets the int8 values (in this level's layout
  // for the given weight type), d one float per block (the F16-rounded block scale), sums
  // the sum of each block's int8 values.
  using QuantizeFn = void (*)(const float* x, int64_t cols, int8_t* qs, float* d, int32_t* sums);
  QuantizeFn quantize_q8_0;  // for Q8_0 weights
  QuantizeFn quantize_q4_0;  // for Q4_0 weights
  // Whether matmul_q4_0 / matmul_q8_0 / the float products want their weights tiled
  // (weight_tiles.h; floats only where FloatRowsTileable).
  bool tile_q4_0;
  bool tile_q8_0;
  bool tile_float;
  MatMulFn matmul_f32;
  MatMulFn matmul_f16;
  MatMulFn matmul_bf16;
  MatMulFn matmul_q8_0;
  MatMulFn matmul_q4_0;
  MatMulFn matmul_q8_group;
  // Float32 helpers for attention.
  float (*dot)(const float* a, const float* b, int64_t count);
  void (*axpy)(float a, const float* x, float* y, int64_t count);  // y += a * x
};

// The kernels of `level`, which the CPU must support (CpuSupportsLevel).
const CpuKernels& KernelsFor(CpuLevel level);

// Per-level tables, defined in kernels_<level>.cc.
const CpuKernels& GenericKernels();
#if defined(__x86_64__)
const CpuKernels& Avx2Kernels();
const CpuKernels& Avx512Kernels();      // F/BW/VL only
const CpuKernels& Avx512VnniKernels();  // with VNNI int8 dot products
#endif

// runq.c's activation quantization for kQ8Group weights, shared by every level because the
// result must match runq.c bit for bit: per group, scale = max|x| / 127 and
// q = (int8)round(x / scale) (all zero when scale is 0).
void QuantizeQ8Group(const float* x, int64_t cols, int group_size, int8_t* q, float* scales);
// runq.c's matmul (float accumulation group by group, in order), shared by every level.
void MatMulQ8Group(const MatMulArgs& args, int64_t row_begin, int64_t row_end);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_CPU_KERNELS_H_
