// Portable scalar kernels: the reference every SIMD level is tested against, and the only
// kernels off x86-64.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace shardrun {
namespace {

void RoundF16(const float* x, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = F16ToF32(F32ToF16(x[i]));
}

void RoundBF16(const float* x, float* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = BF16ToF32(F32ToBF16(x[i]));
}

// llama.cpp's AVX2 quantize_row_q8_0, in scalar form: id = 127 / amax (not 1 / d) and
// rounding half to even (_mm256_round_ps), saturated to int8 (_mm256_packs_epi16).
void QuantizeQ8_0(const float* x, int64_t cols, int8_t* qs, float* d, int32_t* sums) {
  for (int64_t b = 0; b < cols / kQ8_0BlockSize; ++b) {
    const float* v = x + b * kQ8_0BlockSize;
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0BlockSize; ++j) amax = std::max(amax, std::fabs(v[j]));
    d[b] = F16ToF32(F32ToF16(amax / 127.0f));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < kQ8_0BlockSize; ++j) {
      const float q = std::nearbyint(v[j] * id);
      qs[b * kQ8_0BlockSize + j] = static_cast<int8_t>(std::clamp(q, -128.0f, 127.0f));
      sum += qs[b * kQ8_0BlockSize + j];
    }
    sums[b] = sum;
  }
}

template <typename Convert>
void MatMulFloat(const MatMulArgs& a, int64_t row_begin, int64_t row_end, Convert convert) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* w = a.w + r * a.w_row_bytes;
    for (int t = 0; t < a.n; ++t) {
      const float* x = a.xf + t * a.x_stride;
      float sum = 0.0f;
      for (int64_t c = 0; c < a.cols; ++c) sum += convert(w, c) * x[c];
      a.out[t * a.out_stride + r] = sum;
    }
  }
}

void MatMulF32(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  MatMulFloat(a, row_begin, row_end, [](const uint8_t* w, int64_t c) {
    float v;
    std::memcpy(&v, w + c * sizeof(float), sizeof(float));
    return v;
  });
}

void MatMulF16(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  MatMulFloat(a, row_begin, row_end, [](const uint8_t* w, int64_t c) {
    uint16_t h;
    std::memcpy(&h, w + c * sizeof(h), sizeof(h));
    return F16ToF32(h);
  });
}

void MatMulBF16(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  MatMulFloat(a, row_begin, row_end, [](const uint8_t* w, int64_t c) {
    uint16_t h;
    std::memcpy(&h, w + c * sizeof(h), sizeof(h));
    return BF16ToF32(h);
  });
}

// Block dot products as ggml's reference vec_dot: an exact int32 sum per block, scaled by
// the product of the two block scales.
void MatMulQ8_0(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  const int64_t blocks = a.cols / kQ8_0BlockSize;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const auto* w = reinterpret_cast<const BlockQ8_0*>(a.w + r * a.w_row_bytes);
    for (int t = 0; t < a.n; ++t) {
      const int8_t* xq = a.xq + t * a.x_stride;
      const float* xd = a.xs + t * a.xs_stride;
      float sum = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < kQ8_0BlockSize; ++j) {
          isum += w[b].qs[j] * xq[b * kQ8_0BlockSize + j];
        }
        sum += static_cast<float>(isum) * (F16ToF32(w[b].d) * xd[b]);
      }
      a.out[t * a.out_stride + r] = sum;
    }
  }
}

void MatMulQ4_0(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  const int64_t blocks = a.cols / kQ4_0BlockSize;
  constexpr int kHalf = kQ4_0BlockSize / 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const auto* w = reinterpret_cast<const BlockQ4_0*>(a.w + r * a.w_row_bytes);
    for (int t = 0; t < a.n; ++t) {
      const int8_t* xq = a.xq + t * a.x_stride;
      const float* xd = a.xs + t * a.xs_stride;
      float sum = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const int8_t* x = xq + b * kQ4_0BlockSize;
        int32_t isum = 0;
        for (int j = 0; j < kHalf; ++j) {
          isum += ((w[b].qs[j] & 0x0f) - 8) * x[j] + ((w[b].qs[j] >> 4) - 8) * x[j + kHalf];
        }
        sum += static_cast<float>(isum) * (F16ToF32(w[b].d) * xd[b]);
      }
      a.out[t * a.out_stride + r] = sum;
    }
  }
}

float Dot(const float* a, const float* b, int64_t count) {
  float sum = 0.0f;
  for (int64_t i = 0; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

void Axpy(float a, const float* x, float* y, int64_t count) {
  for (int64_t i = 0; i < count; ++i) y[i] += a * x[i];
}

}  // namespace

const CpuKernels& GenericKernels() {
  static constexpr CpuKernels kKernels = {
      .name = "generic",
      .round_f16 = RoundF16,
      .round_bf16 = RoundBF16,
      .quantize_q8_0 = QuantizeQ8_0,
      .quantize_q4_0 = QuantizeQ8_0,
      .tile_q4_0 = false,
      .tile_q8_0 = false,
      .tile_float = false,
      .matmul_f32 = MatMulF32,
      .matmul_f16 = MatMulF16,
      .matmul_bf16 = MatMulBF16,
      .matmul_q8_0 = MatMulQ8_0,
      .matmul_q4_0 = MatMulQ4_0,
      .matmul_q8_group = MatMulQ8Group,
      .dot = Dot,
      .axpy = Axpy,
  };
  return kKernels;
}

}  // namespace shardrun
