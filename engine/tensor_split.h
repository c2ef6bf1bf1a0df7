// Cutting weight matrices for tensor parallelism.
//
// A member of a tensor-parallel group keeps, of each layer, the rows of wq/wk/wv that produce
// its heads, the rows of the FFN gate and up matrices that produce its hidden units, and the
// matching *columns* of the attention output and FFN down matrices: its product with those is
// a partial sum that the group adds up. Rows of a row-major matrix are contiguous and are used
// in place; columns are copied into storage the caller keeps.
#ifndef SHARDRUN_ENGINE_TENSOR_SPLIT_H_
#define SHARDRUN_ENGINE_TENSOR_SPLIT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_slice.h"
#include "model/model_config.h"
#include "model/tensor_view.h"

namespace shardrun {

// The query heads that share the KV heads `kv_heads`.
IndexRange QueryHeads(const ModelConfig& config, IndexRange kv_heads);

// The smallest step in which columns of a matrix of `type` can be cut: its quantization
// block (1 for float types). kQ8Group files are refused by ColumnSlice.
int ColumnBlock(TensorType type);

// Rows [begin, end) of the matrix `view`, in place.
absl::StatusOr<TensorView> RowSlice(const TensorView& view, int64_t begin, int64_t end);

// Columns [begin, end) of the matrix `view`, copied into `storage` (resized; it must outlive
// the result). Both ends must lie on ColumnBlock boundaries.
absl::StatusOr<TensorView> ColumnSlice(const TensorView& view, int64_t begin, int64_t end,
                                       std::vector<uint8_t>& storage);

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_TENSOR_SPLIT_H_
