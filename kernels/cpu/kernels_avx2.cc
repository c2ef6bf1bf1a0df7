// AVX2 + FMA + F16C kernels. Compiled with -mavx2 -mfma -mf16c; used only when the CPU has
// them (cpu_level.cc).
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/tile_loop.h"

namespace shardrun {
namespace {

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void RoundF16(const float* x, float* out, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
  }
  for (; i < count; ++i) out[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

// Round to nearest even on the top 16 bits; NaNs stay NaN (quieted), as F32ToBF16.
inline __m256i RoundToBF16Bits(__m256i bits) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lsb);
  const __m256i abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
  const __m256i quiet = _mm256_or_si256(bits, _mm256_set1_epi32(0x00400000));
  return _mm256_and_si256(_mm256_blendv_epi8(rounded, quiet, is_nan),
                          _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
}

void RoundBF16(const float* x, float* out, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), RoundToBF16Bits(bits));
  }
  for (; i < count; ++i) out[i] = BF16ToF32(F32ToBF16(x[i]));
}

// llama.cpp's quantize_row_q8_0 (AVX2 branch), instruction for instruction.
void QuantizeQ8_0(const float* x, int64_t cols, int8_t* qs, float* d, int32_t* sums) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < cols / kQ8_0BlockSize; ++b) {
    const float* p = x + b * kQ8_0BlockSize;
    __m256 v0 = _mm256_loadu_ps(p);
    __m256 v1 = _mm256_loadu_ps(p + 8);
    __m256 v2 = _mm256_loadu_ps(p + 16);
    __m256 v3 = _mm256_loadu_ps(p + 24);
    __m256 max_abs = _mm256_andnot_ps(sign_bit, v0);
    max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v1));
    max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v2));
    max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v3));
    __m128 max4 = _mm_max_ps(_mm256_extractf128_ps(max_abs, 1), _mm256_castps256_ps128(max_abs));
    max4 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
    max4 = _mm_max_ss(max4, _mm_movehdup_ps(max4));
    const float amax = _mm_cvtss_f32(max4);
    d[b] = _cvtsh_ss(_cvtss_sh(amax / 127.0f, _MM_FROUND_TO_NEAREST_INT));
    const __m256 mul = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    v0 = _mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_ROUND_NEAREST);
    v1 = _mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_ROUND_NEAREST);
    v2 = _mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_ROUND_NEAREST);
    v3 = _mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_ROUND_NEAREST);
    __m256i i0 = _mm256_packs_epi32(_mm256_cvtps_epi32(v0), _mm256_cvtps_epi32(v1));
    __m256i i2 = _mm256_packs_epi32(_mm256_cvtps_epi32(v2), _mm256_cvtps_epi32(v3));
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + b * kQ8_0BlockSize), i0);
    // Sum of the 32 bytes: |q| <= 127, so the 16-bit pair sums of maddubs(1, q) are exact.
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), i0);
    const __m256i quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    sums[b] = _mm_cvtsi128_si32(s);
  }
}

// --- Float weights --------------------------------------------------------------------------

struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m256 Load(const uint8_t* p) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m256 Load(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m256 Load(const uint8_t* p) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
};

template <class W>
struct FloatKernel {
  template <int R, int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0) {
    const uint8_t* w[R];
    const float* x[T];
    for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_row_bytes;
    for (int t = 0; t < T; ++t) x[t] = a.xf + (t0 + t) * a.x_stride;
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    }
    const auto step = [&](const uint8_t* const* wp, const float* const* xp, int64_t c) {
      __m256 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(xp[t] + c);
      for (int r = 0; r < R; ++r) {
        const __m256 wv = W::Load(wp[r] + c * W::kBytes);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
      }
    };
    int64_t c = 0;
    for (; c + 8 <= a.cols; c += 8) step(w, x, c);
    if (c < a.cols) {
      // The last partial vector goes through zero-padded copies, so it is rounded and summed
      // exactly like the others.
      const int64_t rest = a.cols - c;
      alignas(32) uint8_t wpad[R][8 * 4] = {};
      alignas(32) float xpad[T][8] = {};
      const uint8_t* wp[R];
      const float* xp[T];
      for (int r = 0; r < R; ++r) {
        std::memcpy(wpad[r], w[r] + c * W::kBytes, rest * W::kBytes);
        wp[r] = wpad[r];
      }
      for (int t = 0; t < T; ++t) {
        std::memcpy(xpad[t], x[t] + c, rest * sizeof(float));
        xp[t] = xpad[t];
      }
      step(wp, xp, 0);
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t)
        a.out[(t0 + t) * a.out_stride + r0 + r] = HorizontalSum(acc[r][t]);
    }
  }
};

template <class W>
void MatMulFloat(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  if (a.n == 1) {
    RunTiles<FloatKernel<W>, 4, 1>(a, row_begin, row_end);
  } else {
    RunTiles<FloatKernel<W>, 4, 2>(a, row_begin, row_end);
  }
}

// --- Quantized weights ----------------------------------------------------------------------
// Per block an exact int32 dot product through _mm256_maddubs_epi16 (u8 x s8 -> s16 pairs)
// and _mm256_madd_epi16, then one fused multiply-add with the product of the block scales.

inline __m256i SumPairs(__m256i s16) { return _mm256_madd_epi16(s16, _mm256_set1_epi16(1)); }

// Q4_0: nibbles are 0..15, so maddubs(nibbles, x) cannot saturate; subtracting
// maddubs(8, x) turns it into the dot product with nibble - 8.
struct Q4_0Kernel {
  template <int R, int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0) {
    const BlockQ4_0* w[R];
    for (int r = 0; r < R; ++r) {
      w[r] = reinterpret_cast<const BlockQ4_0*>(a.w + (r0 + r) * a.w_row_bytes);
    }
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    }
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    const __m256i eight = _mm256_set1_epi8(8);
    const uint8_t* ahead =
        reinterpret_cast<const uint8_t*>(w[0]) + kPrefetchTiles * R * a.w_row_bytes;
    for (int64_t b = 0; b < a.cols / kQ4_0BlockSize; ++b) {
      if (t0 == 0) PrefetchAhead(ahead, b, R * sizeof(BlockQ4_0));
      __m256i wv[R];
      float dw[R];
      for (int r = 0; r < R; ++r) {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r][b].qs));
        wv[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low_mask);
        dw[r] = _cvtsh_ss(w[r][b].d);
      }
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a.xq + (t0 + t) * a.x_stride + b * kQ4_0BlockSize;
        const float dx = a.xs[(t0 + t) * a.xs_stride + b];
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
        const __m256i bias = _mm256_maddubs_epi16(eight, x);
        for (int r = 0; r < R; ++r) {
          const __m256i dot = SumPairs(_mm256_sub_epi16(_mm256_maddubs_epi16(wv[r], x), bias));
          acc[r][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw[r] * dx), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t)
        a.out[(t0 + t) * a.out_stride + r0 + r] = HorizontalSum(acc[r][t]);
    }
  }
};

// Q8_0: maddubs needs one unsigned operand, so it multiplies |w| by x carrying w's sign
// (|w| <= 128 and |x| <= 127: the s16 pair sums cannot saturate).
struct Q8_0Kernel {
  template <int R, int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0) {
    const BlockQ8_0* w[R];
    for (int r = 0; r < R; ++r) {
      w[r] = reinterpret_cast<const BlockQ8_0*>(a.w + (r0 + r) * a.w_row_bytes);
    }
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    }
    const uint8_t* ahead =
        reinterpret_cast<const uint8_t*>(w[0]) + kPrefetchTiles * R * a.w_row_bytes;
    for (int64_t b = 0; b < a.cols / kQ8_0BlockSize; ++b) {
      if (t0 == 0) PrefetchAhead(ahead, b, R * sizeof(BlockQ8_0));
      __m256i wv[R];
      __m256i wabs[R];
      float dw[R];
      for (int r = 0; r < R; ++r) {
        wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[r][b].qs));
        wabs[r] = _mm256_abs_epi8(wv[r]);
        dw[r] = _cvtsh_ss(w[r][b].d);
      }
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a.xq + (t0 + t) * a.x_stride + b * kQ8_0BlockSize;
        const float dx = a.xs[(t0 + t) * a.xs_stride + b];
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
        for (int r = 0; r < R; ++r) {
          const __m256i dot = SumPairs(_mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(x, wv[r])));
          acc[r][t] =
              _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw[r] * dx), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t)
        a.out[(t0 + t) * a.out_stride + r0 + r] = HorizontalSum(acc[r][t]);
    }
  }
};

template <class K>
struct InPlace {
  static void Run(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
    if (a.n == 1) {
      RunTiles<K, 4, 1>(a, row_begin, row_end);
    } else {
      RunTiles<K, 2, 2>(a, row_begin, row_end);
    }
  }
};

inline __m256i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm256_set1_epi32(v);
}

// Tiled Q4_0 (weight_tiles.h): each 64-byte chunk is two registers of 8 rows. Per row the
// 8 vpmaddubsw pair sums of a block (nibbles <= 15, |x| <= 127: at most 3810 each) add up to at
// most 30480 and stay exact in 16 bits, so one vpmaddwd per block and half makes them int32.
// (Tiled Q8_0 stores w + 128, which vpmaddubsw cannot take: Q8_0 stays in place here.)
struct Q4_0Tiles {
  static constexpr int64_t kBlockBytes = kTileRows * sizeof(BlockQ4_0);
  template <int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0, float* out, int64_t out_stride) {
    const uint8_t* tile = a.w + r0 * a.w_row_bytes;
    const int64_t blocks = a.cols / kQ4_0BlockSize;
    const __m256i low_mask = _mm256_set1_epi8(0x0f);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][T];
    for (int h = 0; h < 2; ++h) {
      for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* p = tile + b * kBlockBytes;
      for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h+7
        const __m256 dw =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
        __m256i lo[4];
        __m256i hi[4];
        for (int c = 0; c < 4; ++c) {
          const __m256i q =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 + 64 * c + 32 * h));
          lo[c] = _mm256_and_si256(q, low_mask);
          hi[c] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low_mask);
        }
        for (int t = 0; t < T; ++t) {
          const int8_t* x = a.xq + (t0 + t) * a.x_stride + b * kQ4_0BlockSize;
          const int64_t s = (t0 + t) * a.xs_stride + b;
          __m256i pairs = _mm256_setzero_si256();
          for (int c = 0; c < 4; ++c) {
            pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(lo[c], Broadcast4(x + 4 * c)));
            pairs =
                _mm256_add_epi16(pairs, _mm256_maddubs_epi16(hi[c], Broadcast4(x + 16 + 4 * c)));
          }
          // The nibbles n stand for n - 8.
          const __m256i dot =
              _mm256_sub_epi32(_mm256_madd_epi16(pairs, ones), _mm256_set1_epi32(8 * a.xsum[s]));
          acc[h][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                      _mm256_mul_ps(dw, _mm256_set1_ps(a.xs[s])), acc[h][t]);
        }
      }
    }
    for (int t = 0; t < T; ++t) {
      _mm256_storeu_ps(out + t * out_stride, acc[0][t]);
      _mm256_storeu_ps(out + t * out_stride + 8, acc[1][t]);
    }
  }
};

void MatMulQ4_0(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  if (a.tiled) {
    MatMulTiled<Q4_0Tiles, 2, InPlace<Q4_0Kernel>>(a, row_begin, row_end);
  } else {
    InPlace<Q4_0Kernel>::Run(a, row_begin, row_end);
  }
}

float Dot(const float* a, const float* b, int64_t count) {
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= count; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  float sum = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < count; ++i) sum += a[i] * b[i];
  return sum;
}

void Axpy(float a, const float* x, float* y, int64_t count) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < count; ++i) y[i] += a * x[i];
}

}  // namespace

const CpuKernels& Avx2Kernels() {
  static constexpr CpuKernels kKernels = {
      .name = "avx2",
      .round_f16 = RoundF16,
      .round_bf16 = RoundBF16,
      .quantize_q8_0 = QuantizeQ8_0,
      .quantize_q4_0 = QuantizeQ8_0,
      .tile_q4_0 = true,
      .tile_q8_0 = false,
      .tile_float = false,
      .matmul_f32 = MatMulFloat<LoadF32>,
      .matmul_f16 = MatMulFloat<LoadF16>,
      .matmul_bf16 = MatMulFloat<LoadBF16>,
      .matmul_q8_0 = InPlace<Q8_0Kernel>::Run,
      .matmul_q4_0 = MatMulQ4_0,
      .matmul_q8_group = MatMulQ8Group,
      .dot = Dot,
      .axpy = Axpy,
  };
  return kKernels;
}

}  // namespace shardrun
