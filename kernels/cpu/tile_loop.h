// The loop that walks a range of weight rows and all tokens in register tiles.
//
// Included only by the per-instruction-set kernel files. Everything is in an unnamed
// namespace so that each file gets its own copy, compiled with its own -m flags: a shared
// inline function could otherwise be linked from the file with the widest instruction set
// and run on a CPU without it.
#ifndef SHARDRUN_KERNELS_CPU_TILE_LOOP_H_
#define SHARDRUN_KERNELS_CPU_TILE_LOOP_H_

#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/weight_tiles.h"

namespace shardrun {
namespace {  // NOLINT(build/namespaces): see above.

// In-place kernels (quantized rows in the file's layout): rows are short (a 2048-column Q4_0
// row is 18 cache lines) and a tile reads R of them side by side, which the hardware
// prefetchers follow poorly. So while a tile works through its rows it prefetches the rows
// kPrefetchTiles tiles further on (rows are contiguous) at the pace it consumes its own:
// `step` bytes per step, this being step `i`. Measured on a 2-core Zen 4 with 256 MiB of
// 2048 x 2048 matrices: Q4_0 7 -> 17 GB/s on one thread, 11 -> 26 GB/s on two; one tile
// ahead beats two or four. Float rows (4-8 KiB) and weight tiles (weight_tiles.h) stream fine
// on their own and lose 10-15% with it, so those kernels do not prefetch.
constexpr int kPrefetchTiles = 1;
inline void PrefetchAhead(const uint8_t* ahead, int64_t i, int64_t step) {
  for (int64_t off = 0; off < step; off += 64) __builtin_prefetch(ahead + i * step + off, 0, 3);
}

template <class K, int R, int kT>
void RunTokens(const MatMulArgs& a, int64_t r) {
  int t = 0;
  for (; t + kT <= a.n; t += kT) K::template Tile<R, kT>(a, r, t);
  for (; t < a.n; ++t) K::template Tile<R, 1>(a, r, t);
}

// Calls K::template Tile<R, T>(args, row, token) over rows [row_begin, row_end) and all
// tokens: tiles of kR rows by kT tokens, then single rows and single tokens for the rest.
// A tile reads each weight row once for its kT tokens (weights stay in L1 across tiles).
template <class K, int kR, int kT>
void RunTiles(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  for (; r + kR <= row_end; r += kR) RunTokens<K, kR, kT>(a, r);
  for (; r < row_end; ++r) RunTokens<K, 1, kT>(a, r);
}

// --- Tiled weights (weight_tiles.h): K::template Tile<T>(args, r0, t0, out, out_stride)
// computes the kTileRows rows from r0 (a multiple of kTileRows) for tokens t0 .. t0+T-1 into
// out[t * out_stride + i].

template <class K, int T>
void TileRest(const MatMulArgs& a, int64_t r0, int t, int rest, float* out, int64_t stride) {
  if constexpr (T > 0) {
    if (rest == T) {
      K::template Tile<T>(a, r0, t, out + t * stride, stride);
    } else {
      TileRest<K, T - 1>(a, r0, t, rest, out, stride);
    }
  }
}

// All tokens of the tile at r0: kT at a time, then the rest together.
template <class K, int kT>
void TileTokens(const MatMulArgs& a, int64_t r0, float* out, int64_t stride) {
  int t = 0;
  for (; t + kT <= a.n; t += kT) K::template Tile<kT>(a, r0, t, out + t * stride, stride);
  TileRest<K, kT - 1>(a, r0, t, a.n - t, out, stride);
}

// Rows [row_begin, row_end) of a tiled matrix: complete tiles with K, the rows after the last
// one (in the file's layout) with Rows::Run. A range that cuts a tile computes the whole tile
// and keeps its part (the backend's ranges never do).
template <class K, int kT, class Rows>
void MatMulTiled(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  const int64_t tiled_end = a.rows / kTileRows * kTileRows;
  int64_t r = row_begin;
  while (r < row_end && r < tiled_end) {
    const int64_t tile = r / kTileRows * kTileRows;
    const int64_t end = row_end < tile + kTileRows ? row_end : tile + kTileRows;
    if (r == tile && end == tile + kTileRows) {
      TileTokens<K, kT>(a, r, a.out + r, a.out_stride);
    } else {
      float part[kTileRows];
      for (int t = 0; t < a.n; ++t) {
        MatMulArgs one = a;
        one.xq = a.xq + t * a.x_stride;
        one.xs = a.xs + t * a.xs_stride;
        one.xsum = a.xsum + t * a.xs_stride;
        one.n = 1;
        K::template Tile<1>(one, tile, 0, part, kTileRows);
        for (int64_t i = r; i < end; ++i) a.out[t * a.out_stride + i] = part[i - tile];
      }
    }
    r = end;
  }
  if (r < row_end) Rows::Run(a, r, row_end);
}

}  // namespace
}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_TILE_LOOP_H_
