// Element types of weight tensors and the block layouts of the quantized ones.
//
// The block layouts are those of GGUF (ggml), so a memory-mapped GGUF tensor is used in
// place. kQ8Group is llama2.c's export.py version-2 format: int8 values in one array and one
// float32 scale per `group_size` values in a second array.
#ifndef SHARDRUN_KERNELS_TENSOR_TYPE_H_
#define SHARDRUN_KERNELS_TENSOR_TYPE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace shardrun {

enum class TensorType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,
  kQ4_0,
  kQ8Group,
};

// "f32", "f16", "bf16", "q8_0", "q4_0", "q8_group".
std::string_view TensorTypeName(TensorType type);
std::optional<TensorType> TensorTypeFromName(std::string_view name);

// GGUF's numeric type ids (ggml_type) for the types we support.
inline constexpr uint32_t kGgmlTypeF32 = 0;
inline constexpr uint32_t kGgmlTypeF16 = 1;
inline constexpr uint32_t kGgmlTypeQ4_0 = 2;
inline constexpr uint32_t kGgmlTypeQ8_0 = 8;
inline constexpr uint32_t kGgmlTypeBF16 = 30;
std::optional<TensorType> TensorTypeFromGgml(uint32_t ggml_type);
uint32_t GgmlTypeOf(TensorType type);  // not valid for kQ8Group
// The name ggml gives a type id, for error messages ("q4_k", "iq2_xs", ...).
std::string_view GgmlTypeName(uint32_t ggml_type);

inline constexpr int kQ8_0BlockSize = 32;
inline constexpr int kQ4_0BlockSize = 32;

// Q8_0: 32 values = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[kQ8_0BlockSize];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q4_0: 32 values; qs[j] holds value j in its low nibble and value j + 16 in its high
// nibble; value = d * (nibble - 8).
struct BlockQ4_0 {
  uint16_t d;  // f16 scale
  uint8_t qs[kQ4_0BlockSize / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// Number of values per block (1 for the float types; 32 for Q8_0/Q4_0). kQ8Group's group
// size is per tensor and is not given here: this returns 1 for it.
int BlockElements(TensorType type);
// Bytes of one block (for kQ8Group: bytes per value in the value array, 1).
size_t BlockBytes(TensorType type);
// Bytes of `n` values stored contiguously; `n` must be a multiple of BlockElements(type).
// For kQ8Group this counts only the int8 value array.
size_t TensorBytes(TensorType type, int64_t n);

// IEEE half and bfloat16 conversions (round to nearest even), scalar reference versions.
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);
float BF16ToF32(uint16_t h);
uint16_t F32ToBF16(float f);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_TENSOR_TYPE_H_
