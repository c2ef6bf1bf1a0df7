// Row-interleaved layouts of Q4_0 and Q8_0 matrices for the AVX-512 kernels.
//
// In the file's layout a row's blocks follow each other, so a kernel works on one row at a
// time and spends several instructions per block unpacking and scaling it. In these layouts
// kTileRows = 16 rows are interleaved block by block so that one 64-byte load holds 4 bytes of
// each of the 16 rows at the same positions: one vpdpbusd against 4 activation bytes broadcast
// to every lane advances all 16 dot products, and the 16 rows' block scales are one 32-byte
// load. A matrix keeps its size and its rows' offsets at tile granularity (the tile of rows
// r .. r+15 starts at r * row_bytes); rows after the last complete tile stay in the file's
// layout.
//
// Q4_0, block b of a tile at b * 288 (16 x 18 bytes): the 16 rows' f16 scales, then 4 chunks
// of 64 bytes; chunk c holds at 4r..4r+3 bytes qs[4c..4c+3] of row r's block (low nibbles:
// values 4c..4c+3; high nibbles: values 4c+16..4c+19).
// Q8_0, block b of a tile at b * 544 (16 x 34 bytes): the 16 rows' f16 scales, then 8 chunks
// of 64 bytes; chunk c holds at 4r..4r+3 values 4c..4c+3 of row r's block, stored as
// w + 128 (w ^ 0x80) because vpdpbusd multiplies unsigned by signed bytes.
//
// Float matrices (F32, F16, BF16) whose rows are whole 64-byte lines: kFloatTileRows = 4 rows
// interleaved line by line, so that the float kernel, which works on 4 rows side by side,
// reads one sequential stream instead of 4 (measured on a 2-core Zen 4, one thread: 4 streams
// 19 GB/s, one 30 GB/s). Line k of the group at r0 holds bytes 64k .. 64k+63 of rows r0 ..
// r0+3, one after the other. Values are not changed, so products are the same to the bit.
#ifndef SHARDRUN_KERNELS_CPU_WEIGHT_TILES_H_
#define SHARDRUN_KERNELS_CPU_WEIGHT_TILES_H_

#include <cstdint>

#include "kernels/tensor_type.h"

namespace shardrun {

inline constexpr int kTileRows = 16;
inline constexpr int kFloatTileRows = 4;
inline constexpr int64_t kFloatTileLine = 64;

// The rows of one tile of `type` (kQ4_0, kQ8_0 or a float type).
int TileRowsOf(TensorType type);
// Whether a `cols`-wide float matrix can take the float layout above.
bool FloatRowsTileable(TensorType type, int64_t cols);

// Writes rows [row_begin, row_end) (row_begin a multiple of TileRowsOf(type)) of the `rows` x
// `cols` matrix `src` (file layout; kQ4_0, kQ8_0, or a float type whose rows are tileable)
// into `dst` in the tiled layout above.
void TileRows(TensorType type, const uint8_t* src, int64_t rows, int64_t cols, int64_t row_begin,
              int64_t row_end, uint8_t* dst);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_WEIGHT_TILES_H_
