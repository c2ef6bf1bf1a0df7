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
#ifndef SHARDRUN_KERNELS_CPU_WEIGHT_TILES_H_
#define SHARDRUN_KERNELS_CPU_WEIGHT_TILES_H_

#include <cstdint>

#include "kernels/tensor_type.h"

namespace shardrun {

inline constexpr int kTileRows = 16;

// Writes rows [row_begin, row_end) (row_begin a multiple of kTileRows) of the `rows` x `cols`
// matrix `src` (file layout, `type` kQ4_0 or kQ8_0) into `dst` in the tiled layout above.
void TileRows(TensorType type, const uint8_t* src, int64_t rows, int64_t cols, int64_t row_begin,
              int64_t row_end, uint8_t* dst);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_WEIGHT_TILES_H_
