// How weights are laid out in device memory for the shaders.
//
// GGUF's Q8_0 / Q4_0 blocks are 34 / 18 bytes, which 32-bit shader loads cannot address
// cheaply, so LoadWeight repacks every matrix: a piece of `rows` rows holds the packed values
// of all its rows (Q8_0: cols int8; Q4_0: cols/2 bytes of nibbles in GGUF's order), then one
// float32 scale per block (converted exactly from the F16 scale). F16 rows are padded to whole
// 32-bit words; F32 is stored as is.
//
// A matrix whose bytes exceed what one storage binding may span (maxStorageBufferRange) is
// split by rows into pieces, each its own buffer, and every operation dispatches once per
// piece.
#ifndef SHARDRUN_KERNELS_VULKAN_WEIGHT_LAYOUT_H_
#define SHARDRUN_KERNELS_VULKAN_WEIGHT_LAYOUT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor_type.h"

namespace shardrun {

// Whether the shaders read `type` (others run their MatMul/Embed on the CPU backend).
bool ShadersSupport(TensorType type);

// Bytes of one row in the device layout (types the shaders support).
uint64_t DeviceRowBytes(TensorType type, int64_t cols);

struct PieceLayout {
  int64_t row_begin = 0;
  int64_t rows = 0;
  uint64_t bytes = 0;     // of the piece's buffer
  uint32_t d_offset = 0;  // Q8_0 / Q4_0: word index of the first block scale
  uint32_t w_stride = 0;  // F32 / F16: words per row
};

// Pieces of at most `max_piece_bytes` covering all rows; an error when one row is larger.
absl::StatusOr<std::vector<PieceLayout>> SplitRows(TensorType type, int64_t rows, int64_t cols,
                                                   uint64_t max_piece_bytes);

// Writes `piece`'s rows from `file_data` (the whole tensor in the file's layout) in the device
// layout into `out` (piece.bytes bytes).
void PackPiece(TensorType type, const void* file_data, int64_t cols, const PieceLayout& piece,
               uint8_t* out);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_WEIGHT_LAYOUT_H_
