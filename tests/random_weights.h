// Random test data for backend kernels: normal vectors and weight matrices in every stored
// format with the exact floats they stand for (shared by the CPU and Vulkan backend tests).
#ifndef SHARDRUN_TESTS_RANDOM_WEIGHTS_H_
#define SHARDRUN_TESTS_RANDOM_WEIGHTS_H_

#include <cstdint>
#include <vector>

#include "kernels/tensor_type.h"
#include "model/tensor_view.h"

namespace shardrun::testing {

// `n` draws of N(0, scale^2), the same for the same seed.
std::vector<float> RandomVector(size_t n, uint32_t seed, float scale = 1.0f);

// A weight matrix in host memory in one of the stored formats, with the exact float values
// it stands for.
struct HostWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> scales;  // kQ8Group
  std::vector<float> values;  // [rows][cols], dequantized
  TensorView view;
};

// Random weights: float types and Q8_0/Q4_0 through QuantizeRow; kQ8Group built by hand
// (random int8 values with random positive scales per group of `group_size`).
HostWeight MakeWeight(TensorType type, int64_t rows, int64_t cols, uint32_t seed,
                      int group_size = 4);

}  // namespace shardrun::testing

#endif  // SHARDRUN_TESTS_RANDOM_WEIGHTS_H_
