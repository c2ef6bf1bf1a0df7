#include "kernels/vulkan/weight_layout.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace shardrun {

bool ShadersSupport(TensorType type) {
  return type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kQ8_0 ||
         type == TensorType::kQ4_0;
}

uint64_t DeviceRowBytes(TensorType type, int64_t cols) {
  const auto c = static_cast<uint64_t>(cols);
  switch (type) {
    case TensorType::kF32:
      return 4 * c;
    case TensorType::kF16:
      return 4 * ((c + 1) / 2);
    case TensorType::kQ8_0:
      return c + c / 32 * 4;
    case TensorType::kQ4_0:
      return c / 2 + c / 32 * 4;
    default:
      return 0;
  }
}

absl::StatusOr<std::vector<PieceLayout>> SplitRows(TensorType type, int64_t rows, int64_t cols,
                                                   uint64_t max_piece_bytes) {
  const uint64_t row_bytes = DeviceRowBytes(type, cols);
  if (row_bytes == 0 || row_bytes > max_piece_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Vulkan: one row of ", cols, " ", std::string(TensorTypeName(type)), " values (", row_bytes,
        " bytes) exceeds the ", max_piece_bytes, " bytes a storage binding may span"));
  }
  const auto rows_per_piece = static_cast<int64_t>(max_piece_bytes / row_bytes);
  std::vector<PieceLayout> pieces;
  for (int64_t begin = 0; begin < rows; begin += rows_per_piece) {
    PieceLayout p;
    p.row_begin = begin;
    p.rows = std::min(rows_per_piece, rows - begin);
    p.bytes = row_bytes * static_cast<uint64_t>(p.rows);
    const auto values = static_cast<uint64_t>(p.rows) * static_cast<uint64_t>(cols);
    if (type == TensorType::kQ8_0) p.d_offset = static_cast<uint32_t>(values / 4);
    if (type == TensorType::kQ4_0) p.d_offset = static_cast<uint32_t>(values / 8);
    p.w_stride = static_cast<uint32_t>(row_bytes / 4);
    pieces.push_back(p);
  }
  return pieces;
}

void PackPiece(TensorType type, const void* file_data, int64_t cols, const PieceLayout& piece,
               uint8_t* out) {
  const auto* src = static_cast<const uint8_t*>(file_data);
  const auto file_row = static_cast<int64_t>(TensorBytes(type, cols));
  const uint64_t row_bytes = DeviceRowBytes(type, cols);
  if (type == TensorType::kF32 || type == TensorType::kF16) {
    std::memset(out, 0, piece.bytes);  // F16 padding
    for (int64_t r = 0; r < piece.rows; ++r) {
      std::memcpy(out + r * row_bytes, src + (piece.row_begin + r) * file_row, file_row);
    }
    return;
  }
  const int64_t blocks = cols / 32;
  const int64_t packed_block = type == TensorType::kQ8_0 ? 32 : 16;
  auto* scales = reinterpret_cast<float*>(out + piece.d_offset * 4);
  for (int64_t r = 0; r < piece.rows; ++r) {
    const uint8_t* row = src + (piece.row_begin + r) * file_row;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * static_cast<int64_t>(BlockBytes(type));
      uint16_t d;
      std::memcpy(&d, block, sizeof(d));
      const float scale = F16ToF32(d);
      std::memcpy(&scales[r * blocks + b], &scale, sizeof(scale));
      std::memcpy(out + (r * blocks + b) * packed_block, block + sizeof(d), packed_block);
    }
  }
}

}  // namespace shardrun
