#include "tests/random_weights.h"

#include <random>
#include <span>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/quantize.h"

namespace shardrun::testing {

std::vector<float> RandomVector(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

HostWeight MakeWeight(TensorType type, int64_t rows, int64_t cols, uint32_t seed, int group_size) {
  HostWeight w;
  const size_t row_bytes = TensorBytes(type, cols);
  w.bytes.resize(row_bytes * rows);
  w.values.resize(rows * cols);
  if (type == TensorType::kQ8Group) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> q(-127, 127);
    std::uniform_real_distribution<float> s(0.001f, 0.02f);
    for (auto& b : w.bytes) b = static_cast<uint8_t>(static_cast<int8_t>(q(rng)));
    w.scales.resize(rows * cols / group_size);
    for (float& x : w.scales) x = s(rng);
  } else {
    const std::vector<float> src = RandomVector(rows * cols, seed, 0.5f);
    for (int64_t r = 0; r < rows; ++r) {
      QuantizeRow(type, std::span<const float>(src.data() + r * cols, cols),
                  w.bytes.data() + r * row_bytes);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(type, w.bytes.data() + r * row_bytes,
                  std::span<float>(w.values.data() + r * cols, cols),
                  w.scales.empty() ? nullptr : w.scales.data() + r * cols / group_size, group_size);
  }
  w.view.name = absl::StrCat("test.", std::string(TensorTypeName(type)));
  w.view.type = type;
  w.view.shape = {cols, rows};
  w.view.data = w.bytes.data();
  w.view.bytes = w.bytes.size();
  if (type == TensorType::kQ8Group) {
    w.view.group_scales = w.scales.data();
    w.view.group_size = group_size;
  }
  return w;
}

}  // namespace shardrun::testing
