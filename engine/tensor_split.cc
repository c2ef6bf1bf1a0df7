#include "engine/tensor_split.h"

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace shardrun {
namespace {

absl::Status CheckMatrix(const TensorView& view) {
  if (view.shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(view.name, " is not a matrix"));
  }
  if (view.type == TensorType::kQ8Group) {
    return absl::UnimplementedError(
        absl::StrCat(view.name,
                     ": tensor splits of llama2.c int8 (version 2) files are not supported; "
                     "use a GGUF file or --type layer"));
  }
  return absl::OkStatus();
}

}  // namespace

IndexRange QueryHeads(const ModelConfig& config, IndexRange kv_heads) {
  const int group = config.n_heads / config.n_kv_heads;
  return {kv_heads.begin * group, kv_heads.end * group};
}

int ColumnBlock(TensorType type) { return BlockElements(type); }

absl::StatusOr<TensorView> RowSlice(const TensorView& view, int64_t begin, int64_t end) {
  if (absl::Status s = CheckMatrix(view); !s.ok()) return s;
  if (begin < 0 || begin > end || end > view.rows()) {
    return absl::InvalidArgumentError(
        absl::StrCat(view.name, ": rows ", begin, "..", end, " outside ", view.rows()));
  }
  const size_t row_bytes = TensorBytes(view.type, view.cols());
  TensorView slice = view;
  slice.name = absl::StrCat(view.name, "[rows ", begin, "..", end, ")");
  slice.shape = {view.cols(), end - begin};
  slice.data = static_cast<const uint8_t*>(view.data) + row_bytes * static_cast<size_t>(begin);
  slice.bytes = row_bytes * static_cast<size_t>(end - begin);
  slice.file_offset = view.file_offset + row_bytes * static_cast<uint64_t>(begin);
  return slice;
}

absl::StatusOr<TensorView> ColumnSlice(const TensorView& view, int64_t begin, int64_t end,
                                       std::vector<uint8_t>& storage) {
  if (absl::Status s = CheckMatrix(view); !s.ok()) return s;
  const int block = ColumnBlock(view.type);
  if (begin < 0 || begin > end || end > view.cols() || begin % block != 0 || end % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(view.name, ": columns ", begin, "..", end,
                                                   " outside ", view.cols(), " or not on its ",
                                                   block, "-value blocks"));
  }
  const size_t row_bytes = TensorBytes(view.type, view.cols());
  const size_t skip = TensorBytes(view.type, begin);
  const size_t keep = TensorBytes(view.type, end - begin);
  const int64_t rows = view.rows();
  storage.resize(keep * static_cast<size_t>(rows));
  const uint8_t* src = static_cast<const uint8_t*>(view.data);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(storage.data() + keep * static_cast<size_t>(r),
                src + row_bytes * static_cast<size_t>(r) + skip, keep);
  }
  TensorView slice = view;
  slice.name = absl::StrCat(view.name, "[cols ", begin, "..", end, ")");
  slice.shape = {end - begin, rows};
  slice.data = storage.data();
  slice.bytes = storage.size();
  return slice;
}

}  // namespace shardrun
