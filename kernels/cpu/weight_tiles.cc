#include "kernels/cpu/weight_tiles.h"

#include <cstring>

namespace shardrun {
namespace {

void TileQ4_0(const BlockQ4_0* const* rows, int64_t blocks, uint8_t* dst) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* out = dst + b * kTileRows * sizeof(BlockQ4_0);
    for (int r = 0; r < kTileRows; ++r) std::memcpy(out + 2 * r, &rows[r][b].d, 2);
    for (int c = 0; c < 4; ++c) {
      for (int r = 0; r < kTileRows; ++r) {
        std::memcpy(out + 32 + 64 * c + 4 * r, rows[r][b].qs + 4 * c, 4);
      }
    }
  }
}

void TileQ8_0(const BlockQ8_0* const* rows, int64_t blocks, uint8_t* dst) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* out = dst + b * kTileRows * sizeof(BlockQ8_0);
    for (int r = 0; r < kTileRows; ++r) std::memcpy(out + 2 * r, &rows[r][b].d, 2);
    for (int c = 0; c < 8; ++c) {
      for (int r = 0; r < kTileRows; ++r) {
        for (int i = 0; i < 4; ++i) {
          out[32 + 64 * c + 4 * r + i] = static_cast<uint8_t>(rows[r][b].qs[4 * c + i]) ^ 0x80;
        }
      }
    }
  }
}

// Lines of 4 rows, one row after the other (see the header).
void TileFloat(const uint8_t* const* rows, int64_t row_bytes, uint8_t* dst) {
  for (int64_t off = 0; off < row_bytes; off += kFloatTileLine) {
    for (int r = 0; r < kFloatTileRows; ++r) {
      std::memcpy(dst, rows[r] + off, kFloatTileLine);
      dst += kFloatTileLine;
    }
  }
}

bool IsFloat(TensorType type) {
  return type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16;
}

}  // namespace

int TileRowsOf(TensorType type) { return IsFloat(type) ? kFloatTileRows : kTileRows; }

bool FloatRowsTileable(TensorType type, int64_t cols) {
  return IsFloat(type) && static_cast<int64_t>(TensorBytes(type, cols)) % kFloatTileLine == 0;
}

void TileRows(TensorType type, const uint8_t* src, int64_t rows, int64_t cols, int64_t row_begin,
              int64_t row_end, uint8_t* dst) {
  const auto row_bytes = static_cast<int64_t>(TensorBytes(type, cols));
  const int64_t blocks = cols / BlockElements(type);
  const int tile_rows = TileRowsOf(type);
  const int64_t tiled_end = rows / tile_rows * tile_rows;
  int64_t r = row_begin;
  for (; r + tile_rows <= row_end && r < tiled_end; r += tile_rows) {
    const uint8_t* rows_src[kTileRows];
    for (int i = 0; i < tile_rows; ++i) rows_src[i] = src + (r + i) * row_bytes;
    if (IsFloat(type)) {
      TileFloat(rows_src, row_bytes, dst + r * row_bytes);
    } else if (type == TensorType::kQ4_0) {
      TileQ4_0(reinterpret_cast<const BlockQ4_0* const*>(rows_src), blocks, dst + r * row_bytes);
    } else {
      TileQ8_0(reinterpret_cast<const BlockQ8_0* const*>(rows_src), blocks, dst + r * row_bytes);
    }
  }
  if (r < row_end) std::memcpy(dst + r * row_bytes, src + r * row_bytes, (row_end - r) * row_bytes);
}

}  // namespace shardrun
