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

namespace shardrun {
namespace {  // NOLINT(build/namespaces): see above.

// Rows of a weight matrix are short (a 2048-column Q4_0 row is 18 cache lines) and a tile reads
// R of them side by side, which the hardware prefetchers follow poorly. So while a tile works
// through its rows it prefetches the rows kPrefetchTiles tiles further on (rows are
// contiguous) at the pace it consumes its own: `step` bytes per step, this being step `i`.
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

}  // namespace
}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_TILE_LOOP_H_
