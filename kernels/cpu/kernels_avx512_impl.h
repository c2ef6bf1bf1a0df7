// AVX-512 kernels (F, BW, VL; VNNI for the int8 dot products when kVnni), included by
// kernels_avx512.cc and kernels_avx512_vnni.cc, each compiled with its own -m flags.
//
// Everything is in an unnamed namespace so that the two files (and no other) get their own
// copies: see tile_loop.h.
//
// Quantized dot products. vpdpbusd (VNNI) and vpmaddubsw multiply unsigned by signed bytes,
// so the weights are made unsigned and the difference is subtracted exactly in int32:
// Q4_0 nibbles n in 0..15 stand for n - 8, so dot(n - 8, x) = dot(n, x) - dot(8, x); Q8_0
// bytes w are biased to w + 128 (w ^ 0x80), so dot(w, x) = dot(w + 128, x) - dot(128, x).
// dot(8, x) and dot(128, x) depend only on the activations and are shared by a tile's rows.
// Without VNNI, Q8_0 uses |w| and x with w's sign instead (vpmaddubsw's 16-bit pair sums
// would saturate on w + 128).
//
// Two kinds of kernels. Tiled (Q4_0Tiles, Q8_0Tiles): the backend copies Q4_0 and (with
// VNNI) Q8_0 matrices into the row-interleaved layout of weight_tiles.h, and one register
// holds 16 rows' partial sums; the biases become one scalar per block (-8 or -128 times the
// block's activation sum, from the quantizer). In place (Q4_0Kernel, Q8_0Kernel): the file's
// layout, one row per register, 2-4 blocks per step; used for rows after the last complete
// tile, for Q8_0 without VNNI, and when a weight was not tiled.
//
// Q4_0 activations use their own layout (QuantizeActs<true>): for every 4 blocks (128 values)
// the first halves of the 4 blocks, then their second halves, so that in place 64 weight bytes
// (the 4 blocks' nibbles) expand with one AND and one shift into the matching 2 x 64 values.
// The tiled kernel reads the same 4-byte runs at their places in that layout.
#ifndef SHARDRUN_KERNELS_CPU_KERNELS_AVX512_IMPL_H_
#define SHARDRUN_KERNELS_CPU_KERNELS_AVX512_IMPL_H_

// GCC 12's AVX-512 headers build "undefined" vectors from self-initialised variables and then
// warn about them wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__  // a GCC-only warning group
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/tile_loop.h"
#include "kernels/cpu/weight_tiles.h"

namespace shardrun {
namespace {  // NOLINT(build/namespaces): see above.

inline __mmask16 FirstLanes(int64_t count) {  // count in 0..16
  return static_cast<__mmask16>((1u << count) - 1);
}

// Reads of weights a decode step streams once: the lines are fetched as non-temporal
// (prefetchnta just before the loads), so that they pass through the caches instead of evicting
// everything else. A step streams far more weights than the caches hold; with ordinary loads
// it leaves them full of weights, and what runs next (the transport: the kernel's TCP stack,
// the message codec) starts from memory. Measured on a 2-vCPU Zen 4 with 4 TinyLlama shards
// (bench/README.md): hops p50 ~55 -> ~32 us over TCP links, ~25 -> ~15 us over shared memory;
// decode the same or faster, single-process too. Single-token tiles only: a prefill's tiles
// read their weights once per group of tokens, from the caches after the first.
inline void StreamPast(const uint8_t* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_NTA);
  }
}

template <class T>
inline const __m128i* M128(const T* p) {
  return reinterpret_cast<const __m128i*>(p);
}
template <class T>
inline const __m256i* M256(const T* p) {
  return reinterpret_cast<const __m256i*>(p);
}

void RoundF16(const float* x, float* out, int64_t count) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(x + i), kRound)));
  }
  if (i < count) {
    const __mmask16 m = FirstLanes(count - i);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_cvtph_ps(_mm512_cvtps_ph(v, kRound)));
  }
}

// Round to nearest even on the top 16 bits; NaNs stay NaN (quieted), as F32ToBF16.
inline __m512i RoundToBF16Bits(__m512i bits) {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb);
  const __m512i abs = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 is_nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x00400000));
  return _mm512_and_si512(_mm512_mask_blend_epi32(is_nan, rounded, quiet),
                          _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
}

void RoundBF16(const float* x, float* out, int64_t count) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    _mm512_storeu_si512(out + i, RoundToBF16Bits(_mm512_loadu_si512(x + i)));
  }
  if (i < count) {
    const __mmask16 m = FirstLanes(count - i);
    _mm512_mask_storeu_epi32(out + i, m, RoundToBF16Bits(_mm512_maskz_loadu_epi32(m, x + i)));
  }
}

// llama.cpp's AVX2 quantize_row_q8_0 on 16 lanes: the same amax, d, id = 127 / amax, rounding
// half to even and int8 saturation, so the results are identical. With `interleave`, every
// complete group of 4 blocks is stored in the Q4_0 kernel's layout (see the top).
template <bool kInterleave>
void QuantizeActs(const float* x, int64_t cols, int8_t* qs, float* d, int32_t* sums) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const int64_t blocks = cols / kQ8_0BlockSize;
  const int64_t grouped = kInterleave ? blocks / 4 * 4 : 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = x + b * kQ8_0BlockSize;
    const __m512 v0 = _mm512_loadu_ps(p);
    const __m512 v1 = _mm512_loadu_ps(p + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    d[b] = _cvtsh_ss(_cvtss_sh(amax / 127.0f, kRound));
    const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, id), kRound);
    const __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, id), kRound);
    const __m128i q0 = _mm512_cvtsepi32_epi8(i0);
    const __m128i q1 = _mm512_cvtsepi32_epi8(i1);
    // |v * id| <= 127 (rounding can reach 127 but not pass it), so nothing saturates and the
    // int32 sums equal the sums of the stored bytes.
    sums[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
    int8_t* first = qs + b * kQ8_0BlockSize;
    int8_t* second = first + 16;
    if (b < grouped) {
      first = qs + (b / 4) * 128 + (b % 4) * 16;
      second = first + 64;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(first), q0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(second), q1);
  }
}

// --- Float weights --------------------------------------------------------------------------

struct LoadF32 {
  static constexpr int kBytes = 4;
  static __m512 Load(const uint8_t* p) { return _mm512_loadu_ps(p); }
  static __m512 LoadFirst(__mmask16 m, const uint8_t* p) { return _mm512_maskz_loadu_ps(m, p); }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  static __m512 Load(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(M256(p))); }
  static __m512 LoadFirst(__mmask16 m, const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  static __m512 Widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 Load(const uint8_t* p) { return Widen(_mm256_loadu_si256(M256(p))); }
  static __m512 LoadFirst(__mmask16 m, const uint8_t* p) {
    return Widen(_mm256_maskz_loadu_epi16(m, p));
  }
};

// kTiled: the rows are in weight_tiles.h's float layout (whole 64-byte lines, 4 rows
// interleaved line by line), else in the file's. Either way each row's products are summed in
// the same order, 16 columns at a time into one vector, so the two give the same bits.
template <class W, bool kTiled>
struct FloatKernel {
  // Vectors of 16 values per 64-byte line, and how far a row's next line is.
  static constexpr int kPerLine = 64 / (16 * W::kBytes);
  static constexpr int64_t kLineStep = kTiled ? kFloatTileRows * kFloatTileLine : kFloatTileLine;

  static const uint8_t* Row(const MatMulArgs& a, int64_t r) {
    if constexpr (kTiled) {
      return a.w + r / kFloatTileRows * kFloatTileRows * a.w_row_bytes +
             r % kFloatTileRows * kFloatTileLine;
    } else {
      return a.w + r * a.w_row_bytes;
    }
  }

  template <int R, int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0) {
    const uint8_t* w[R];
    const float* x[T];
    for (int r = 0; r < R; ++r) w[r] = Row(a, r0 + r);
    for (int t = 0; t < T; ++t) x[t] = a.xf + (t0 + t) * a.x_stride;
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    const int64_t lines = a.cols * W::kBytes / 64;
    for (int64_t l = 0; l < lines; ++l) {
      if constexpr (T == 1) {
        for (int r = 0; r < R; ++r) StreamPast(w[r] + l * kLineStep, 64);
      }
      for (int v = 0; v < kPerLine; ++v) {
        const int64_t c = (l * kPerLine + v) * 16;
        __m512 xv[T];
        for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x[t] + c);
        for (int r = 0; r < R; ++r) {
          const __m512 wv = W::Load(w[r] + l * kLineStep + v * 16 * W::kBytes);
          for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
        }
      }
    }
    // Columns after the last whole line (file layout only: tiled rows are whole lines).
    int64_t c = lines * kPerLine * 16;
    for (; c + 16 <= a.cols; c += 16) {
      __m512 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm512_loadu_ps(x[t] + c);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = W::Load(w[r] + c * W::kBytes);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
      }
    }
    if (c < a.cols) {
      const __mmask16 m = FirstLanes(a.cols - c);
      __m512 xv[T];
      for (int t = 0; t < T; ++t) xv[t] = _mm512_maskz_loadu_ps(m, x[t] + c);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = W::LoadFirst(m, w[r] + c * W::kBytes);
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        a.out[(t0 + t) * a.out_stride + r0 + r] = _mm512_reduce_add_ps(acc[r][t]);
      }
    }
  }
};

template <class K>
void RunFloat(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  if (row_begin >= row_end) return;
  if (a.n == 1) {
    RunTiles<K, 4, 1>(a, row_begin, row_end);
  } else {
    RunTiles<K, 4, 4>(a, row_begin, row_end);
  }
}

template <class W>
void MatMulFloat(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  if (!a.tiled) {
    RunFloat<FloatKernel<W, false>>(a, row_begin, row_end);
    return;
  }
  // Rows after the last complete group of 4 stay in the file's layout.
  const int64_t tiled_end = a.rows / kFloatTileRows * kFloatTileRows;
  RunFloat<FloatKernel<W, true>>(a, row_begin, std::min(row_end, tiled_end));
  RunFloat<FloatKernel<W, false>>(a, std::max(row_begin, tiled_end), row_end);
}

// --- Quantized weights ----------------------------------------------------------------------

// Exact int32 lane sums of u8 x s8 products (4 bytes per lane), added to `acc`.
template <bool kVnni>
inline __m512i DotBytes(__m512i acc, __m512i u, __m512i s) {
  if constexpr (kVnni) {
    return _mm512_dpbusd_epi32(acc, u, s);
  } else {
    // Only for operands whose pair sums fit in int16 (u <= 128 with |s| <= 127).
    return _mm512_add_epi32(acc,
                            _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
  }
}
template <bool kVnni>
inline __m256i DotBytes(__m256i acc, __m256i u, __m256i s) {
  if constexpr (kVnni) {
    return _mm256_dpbusd_epi32(acc, u, s);
  } else {
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
}

inline void StoreSums(const MatMulArgs& a, int64_t r0, int t0, int R, int T, const __m512* acc) {
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      a.out[(t0 + t) * a.out_stride + r0 + r] = _mm512_reduce_add_ps(acc[r * T + t]);
    }
  }
}

template <bool kVnni>
struct Q4_0Kernel {
  template <int R, int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0) {
    const uint8_t* w[R];
    for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_row_bytes;
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    const int64_t blocks = a.cols / kQ4_0BlockSize;
    const int64_t groups = blocks / 4;
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    const __m512i eight = _mm512_set1_epi8(8);
    // 16-bit words 0, 9, 18, 27 are the scales of the 4 blocks at 18-byte spacing: each goes
    // to the 4 lanes holding that block's sums.
    const __m512i scale_words = _mm512_setr_epi32(0, 0, 0x90009, 0x90009, 0x120012, 0x120012,
                                                  0x1b001b, 0x1b001b, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i four_each = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const uint8_t* ahead = w[0] + kPrefetchTiles * R * a.w_row_bytes;
    const int64_t step = R * 4 * static_cast<int64_t>(sizeof(BlockQ4_0));
    for (int64_t g = 0; g < groups; ++g) {
      if (t0 == 0) PrefetchAhead(ahead, g, step);
      __m512i lo[R];
      __m512i hi[R];
      __m512 dw[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* base = w[r] + g * 4 * sizeof(BlockQ4_0);
        __m512i q = _mm512_castsi128_si512(_mm_loadu_si128(M128(base + 2)));
        q = _mm512_inserti32x4(q, _mm_loadu_si128(M128(base + 20)), 1);
        q = _mm512_inserti32x4(q, _mm_loadu_si128(M128(base + 38)), 2);
        q = _mm512_inserti32x4(q, _mm_loadu_si128(M128(base + 56)), 3);
        lo[r] = _mm512_and_si512(q, low_mask);
        hi[r] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low_mask);
        const __m512i words = _mm512_permutexvar_epi16(scale_words, _mm512_loadu_si512(base));
        dw[r] = _mm512_cvtph_ps(_mm512_castsi512_si256(words));
      }
      for (int t = 0; t < T; ++t) {
        const int8_t* xq = a.xq + (t0 + t) * a.x_stride + g * 128;
        const __m512i x_first = _mm512_loadu_si512(xq);
        const __m512i x_second = _mm512_loadu_si512(xq + 64);
        const __m128 dx4 = _mm_loadu_ps(a.xs + (t0 + t) * a.xs_stride + g * 4);
        const __m512 dx = _mm512_permutexvar_ps(four_each, _mm512_castps128_ps512(dx4));
        const __m512i bias = DotBytes<kVnni>(
            DotBytes<kVnni>(_mm512_setzero_si512(), eight, x_first), eight, x_second);
        for (int r = 0; r < R; ++r) {
          __m512i dot = DotBytes<kVnni>(_mm512_setzero_si512(), lo[r], x_first);
          dot = _mm512_sub_epi32(DotBytes<kVnni>(dot, hi[r], x_second), bias);
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[r], dx), acc[r][t]);
        }
      }
    }
    // Blocks after the last complete group: one at a time, activations in natural order.
    const __m256i low_mask256 = _mm256_set1_epi8(0x0f);
    const __m256i eight256 = _mm256_set1_epi8(8);
    for (int64_t b = groups * 4; b < blocks; ++b) {
      __m256i wv[R];
      float dw[R];
      for (int r = 0; r < R; ++r) {
        const BlockQ4_0& block = reinterpret_cast<const BlockQ4_0*>(w[r])[b];
        const __m128i q = _mm_loadu_si128(M128(block.qs));
        wv[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low_mask256);
        dw[r] = _cvtsh_ss(block.d);
      }
      for (int t = 0; t < T; ++t) {
        const __m256i x = _mm256_loadu_si256(M256(a.xq + (t0 + t) * a.x_stride + b * 32));
        const float dx = a.xs[(t0 + t) * a.xs_stride + b];
        const __m256i bias = DotBytes<kVnni>(_mm256_setzero_si256(), eight256, x);
        for (int r = 0; r < R; ++r) {
          const __m256i dot =
              _mm256_sub_epi32(DotBytes<kVnni>(_mm256_setzero_si256(), wv[r], x), bias);
          acc[r][t] = _mm512_fmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(dot)),
                                      _mm512_set1_ps(dw[r] * dx), acc[r][t]);
        }
      }
    }
    StoreSums(a, r0, t0, R, T, &acc[0][0]);
  }
};

template <bool kVnni>
struct Q8_0Kernel {
  // The weight bytes in the unsigned form DotBytes multiplies: w + 128 (VNNI) or |w|.
  static __m512i Unsigned(__m512i q) {
    if constexpr (kVnni) {
      return _mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80)));
    } else {
      return _mm512_abs_epi8(q);
    }
  }
  static __m256i Unsigned(__m256i q) {
    if constexpr (kVnni) {
      return _mm256_xor_si256(q, _mm256_set1_epi8(static_cast<char>(0x80)));
    } else {
      return _mm256_abs_epi8(q);
    }
  }

  template <int R, int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0) {
    const uint8_t* w[R];
    for (int r = 0; r < R; ++r) w[r] = a.w + (r0 + r) * a.w_row_bytes;
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    }
    const int64_t blocks = a.cols / kQ8_0BlockSize;
    const int64_t pairs = blocks / 2;
    const __m512i bias_bytes = _mm512_set1_epi8(static_cast<char>(0x80));
    // Words 0 and 17: the scales of two blocks at 34-byte spacing, 8 lanes each.
    const __m512i scale_words = _mm512_setr_epi32(0, 0, 0, 0, 0x110011, 0x110011, 0x110011,
                                                  0x110011, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i eight_each = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const uint8_t* ahead = w[0] + kPrefetchTiles * R * a.w_row_bytes;
    const int64_t step = R * 2 * static_cast<int64_t>(sizeof(BlockQ8_0));
    for (int64_t p = 0; p < pairs; ++p) {
      if (t0 == 0) PrefetchAhead(ahead, p, step);
      __m512i wu[R];
      __mmask64 negative[R];
      __m512 dw[R];
      for (int r = 0; r < R; ++r) {
        const uint8_t* base = w[r] + p * 2 * sizeof(BlockQ8_0);
        const __m512i q =
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(M256(base + 2))),
                               _mm256_loadu_si256(M256(base + 2 + sizeof(BlockQ8_0))), 1);
        wu[r] = Unsigned(q);
        if constexpr (!kVnni) negative[r] = _mm512_movepi8_mask(q);
        const __m512i words = _mm512_permutexvar_epi16(scale_words, _mm512_loadu_si512(base));
        dw[r] = _mm512_cvtph_ps(_mm512_castsi512_si256(words));
      }
      for (int t = 0; t < T; ++t) {
        const __m512i x = _mm512_loadu_si512(a.xq + (t0 + t) * a.x_stride + p * 64);
        const __m128 dx2 = _mm_castsi128_ps(_mm_loadl_epi64(
            reinterpret_cast<const __m128i*>(a.xs + (t0 + t) * a.xs_stride + 2 * p)));
        const __m512 dx = _mm512_permutexvar_ps(eight_each, _mm512_castps128_ps512(dx2));
        __m512i bias = _mm512_setzero_si512();
        if constexpr (kVnni) bias = _mm512_dpbusd_epi32(bias, bias_bytes, x);
        for (int r = 0; r < R; ++r) {
          __m512i dot;
          if constexpr (kVnni) {
            dot = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wu[r], x), bias);
          } else {
            const __m512i signed_x =
                _mm512_mask_sub_epi8(x, negative[r], _mm512_setzero_si512(), x);
            dot = DotBytes<false>(_mm512_setzero_si512(), wu[r], signed_x);
          }
          acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[r], dx), acc[r][t]);
        }
      }
    }
    if (blocks % 2 != 0) {  // the last block alone
      const int64_t b = blocks - 1;
      __m256i wq[R];
      float dw[R];
      for (int r = 0; r < R; ++r) {
        const BlockQ8_0& block = reinterpret_cast<const BlockQ8_0*>(w[r])[b];
        wq[r] = _mm256_loadu_si256(M256(block.qs));
        dw[r] = _cvtsh_ss(block.d);
      }
      for (int t = 0; t < T; ++t) {
        const __m256i x = _mm256_loadu_si256(M256(a.xq + (t0 + t) * a.x_stride + b * 32));
        const float dx = a.xs[(t0 + t) * a.xs_stride + b];
        __m256i bias = _mm256_setzero_si256();
        if constexpr (kVnni) {
          bias = _mm256_dpbusd_epi32(bias, _mm256_set1_epi8(static_cast<char>(0x80)), x);
        }
        for (int r = 0; r < R; ++r) {
          __m256i dot;
          if constexpr (kVnni) {
            dot = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), Unsigned(wq[r]), x),
                                   bias);
          } else {
            dot = DotBytes<false>(_mm256_setzero_si256(), Unsigned(wq[r]),
                                  _mm256_sign_epi8(x, wq[r]));
          }
          acc[r][t] = _mm512_fmadd_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(dot)),
                                      _mm512_set1_ps(dw[r] * dx), acc[r][t]);
        }
      }
    }
    StoreSums(a, r0, t0, R, T, &acc[0][0]);
  }
};

// --- Tiled weights (weight_tiles.h) -----------------------------------------------------------

inline __m512i Broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// A tile is one sequential stream of 16 rows' bytes, which the hardware prefetchers follow
// well: software prefetching the next tile measured 10-15% slower here.
//
// Q4_0 tile: 16 rows x T tokens. The activations are in QuantizeActs<true>'s layout, whose
// 4-byte runs are the same as the natural layout's, only placed differently.
template <bool kVnni>
struct Q4_0Tiles {
  static constexpr int64_t kBlockBytes = kTileRows * sizeof(BlockQ4_0);
  template <int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0, float* out, int64_t out_stride) {
    const uint8_t* tile = a.w + r0 * a.w_row_bytes;
    const int64_t blocks = a.cols / kQ4_0BlockSize;
    const int64_t grouped = blocks / 4 * 4;
    const __m512i low_mask = _mm512_set1_epi8(0x0f);
    __m512 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* p = tile + b * kBlockBytes;
      if constexpr (T == 1) StreamPast(p, kBlockBytes);
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(M256(p)));
      __m512i lo[4];
      __m512i hi[4];
      for (int c = 0; c < 4; ++c) {
        const __m512i q = _mm512_loadu_si512(p + 32 + 64 * c);
        lo[c] = _mm512_and_si512(q, low_mask);
        hi[c] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low_mask);
      }
      const int64_t first = b < grouped ? b / 4 * 128 + b % 4 * 16 : b * 32;
      const int64_t second = first + (b < grouped ? 64 : 16);
      for (int t = 0; t < T; ++t) {
        const int8_t* x = a.xq + (t0 + t) * a.x_stride;
        const int64_t s = (t0 + t) * a.xs_stride + b;
        // Start from -8 * sum(x): the nibbles n stand for n - 8.
        __m512i dot = _mm512_set1_epi32(-8 * a.xsum[s]);
        for (int c = 0; c < 4; ++c) {
          dot = DotBytes<kVnni>(dot, lo[c], Broadcast4(x + first + 4 * c));
          dot = DotBytes<kVnni>(dot, hi[c], Broadcast4(x + second + 4 * c));
        }
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                                 _mm512_mul_ps(dw, _mm512_set1_ps(a.xs[s])), acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(out + t * out_stride, acc[t]);
  }
};

// Q8_0 tile (VNNI only: the stored w + 128 would saturate vpmaddubsw's 16-bit sums).
struct Q8_0Tiles {
  static constexpr int64_t kBlockBytes = kTileRows * sizeof(BlockQ8_0);
  template <int T>
  static void Tile(const MatMulArgs& a, int64_t r0, int t0, float* out, int64_t out_stride) {
    const uint8_t* tile = a.w + r0 * a.w_row_bytes;
    const int64_t blocks = a.cols / kQ8_0BlockSize;
    __m512 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* p = tile + b * kBlockBytes;
      if constexpr (T == 1) StreamPast(p, kBlockBytes);
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(M256(p)));
      __m512i wu[8];
      for (int c = 0; c < 8; ++c) wu[c] = _mm512_loadu_si512(p + 32 + 64 * c);
      for (int t = 0; t < T; ++t) {
        const int8_t* x = a.xq + (t0 + t) * a.x_stride + b * kQ8_0BlockSize;
        const int64_t s = (t0 + t) * a.xs_stride + b;
        // Start from -128 * sum(x): the weights are stored as w + 128.
        __m512i dot = _mm512_set1_epi32(-128 * a.xsum[s]);
        for (int c = 0; c < 8; ++c) dot = DotBytes<true>(dot, wu[c], Broadcast4(x + 4 * c));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                                 _mm512_mul_ps(dw, _mm512_set1_ps(a.xs[s])), acc[t]);
      }
    }
    for (int t = 0; t < T; ++t) _mm512_storeu_ps(out + t * out_stride, acc[t]);
  }
};

template <class K>
struct InPlace {
  static void Run(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
    if (a.n == 1) {
      RunTiles<K, 4, 1>(a, row_begin, row_end);
    } else {
      RunTiles<K, 4, 4>(a, row_begin, row_end);
    }
  }
};

template <class K, class Tiles>
void MatMulQuantized(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  if (a.tiled) {
    MatMulTiled<Tiles, 4, InPlace<K>>(a, row_begin, row_end);
  } else {
    InPlace<K>::Run(a, row_begin, row_end);
  }
}

float Dot(const float* a, const float* b, int64_t count) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  }
  if (i < count) {
    const __mmask16 m = FirstLanes(count - i);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

void Axpy(float a, const float* x, float* y, int64_t count) {
  const __m512 av = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < count) {
    const __mmask16 m = FirstLanes(count - i);
    const __m512 v =
        _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}

// Q8_0 weights are tiled only with VNNI (see Q8_0Tiles).
template <bool kVnni>
constexpr MatMulFn Q8_0MatMul() {
  if constexpr (kVnni) {
    return MatMulQuantized<Q8_0Kernel<true>, Q8_0Tiles>;
  } else {
    return InPlace<Q8_0Kernel<false>>::Run;
  }
}

template <bool kVnni>
constexpr CpuKernels MakeAvx512Kernels() {
  return CpuKernels{
      .name = kVnni ? "avx512-vnni" : "avx512",
      .round_f16 = RoundF16,
      .round_bf16 = RoundBF16,
      .quantize_q8_0 = QuantizeActs<false>,
      .quantize_q4_0 = QuantizeActs<true>,
      .tile_q4_0 = true,
      .tile_q8_0 = kVnni,
      .tile_float = true,
      .matmul_f32 = MatMulFloat<LoadF32>,
      .matmul_f16 = MatMulFloat<LoadF16>,
      .matmul_bf16 = MatMulFloat<LoadBF16>,
      .matmul_q8_0 = Q8_0MatMul<kVnni>(),
      .matmul_q4_0 = MatMulQuantized<Q4_0Kernel<kVnni>, Q4_0Tiles<kVnni>>,
      .matmul_q8_group = MatMulQ8Group,
      .dot = Dot,
      .axpy = Axpy,
  };
}

}  // namespace
}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_KERNELS_AVX512_IMPL_H_
