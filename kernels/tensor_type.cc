#include "kernels/tensor_type.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace shardrun {

std::string_view TensorTypeName(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return "f32";
    case TensorType::kF16:
      return "f16";
    case TensorType::kBF16:
      return "bf16";
    case TensorType::kQ8_0:
      return "q8_0";
    case TensorType::kQ4_0:
      return "q4_0";
    case TensorType::kQ8Group:
      return "q8_group";
  }
  return "unknown";
}

std::optional<TensorType> TensorTypeFromName(std::string_view name) {
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                       TensorType::kQ4_0, TensorType::kQ8Group}) {
    if (TensorTypeName(t) == name) return t;
  }
  return std::nullopt;
}

std::optional<TensorType> TensorTypeFromGgml(uint32_t ggml_type) {
  switch (ggml_type) {
    case kGgmlTypeF32:
      return TensorType::kF32;
    case kGgmlTypeF16:
      return TensorType::kF16;
    case kGgmlTypeQ4_0:
      return TensorType::kQ4_0;
    case kGgmlTypeQ8_0:
      return TensorType::kQ8_0;
    case kGgmlTypeBF16:
      return TensorType::kBF16;
    default:
      return std::nullopt;
  }
}

uint32_t GgmlTypeOf(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return kGgmlTypeF32;
    case TensorType::kF16:
      return kGgmlTypeF16;
    case TensorType::kBF16:
      return kGgmlTypeBF16;
    case TensorType::kQ8_0:
      return kGgmlTypeQ8_0;
    case TensorType::kQ4_0:
      return kGgmlTypeQ4_0;
    case TensorType::kQ8Group:
      break;
  }
  return UINT32_MAX;
}

std::string_view GgmlTypeName(uint32_t ggml_type) {
  static constexpr std::string_view kNames[] = {
      "f32",      "f16",      "q4_0",    "q4_1",  "q4_2",   "q4_3",  "q5_0",  "q5_1",
      "q8_0",     "q8_1",     "q2_k",    "q3_k",  "q4_k",   "q5_k",  "q6_k",  "q8_k",
      "iq2_xxs",  "iq2_xs",   "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs",
      "i8",       "i16",      "i32",     "i64",   "f64",    "iq1_m", "bf16",  "q4_0_4_4",
      "q4_0_4_8", "q4_0_8_8", "tq1_0",   "tq2_0"};
  if (ggml_type < std::size(kNames)) return kNames[ggml_type];
  return "unknown";
}

int BlockElements(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0:
      return kQ8_0BlockSize;
    case TensorType::kQ4_0:
      return kQ4_0BlockSize;
    default:
      return 1;
  }
}

size_t BlockBytes(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 4;
    case TensorType::kF16:
      return 2;
    case TensorType::kBF16:
      return 2;
    case TensorType::kQ8_0:
      return sizeof(BlockQ8_0);
    case TensorType::kQ4_0:
      return sizeof(BlockQ4_0);
    case TensorType::kQ8Group:
      return 1;
  }
  return 0;
}

size_t TensorBytes(TensorType type, int64_t n) {
  return static_cast<size_t>(n / BlockElements(type)) * BlockBytes(type);
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mantissa & 0x3ff) << 13;
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | mantissa << 13;
  } else {
    bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
  }
  return std::bit_cast<float>(bits);
}

uint16_t F32ToF16(float f) {
  // Round to nearest even, as the F16C instruction and ggml do.
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0));
  }
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // overflow -> inf
  if (abs < 0x38800000) {                                   // result is subnormal or zero
    const float magic = std::bit_cast<float>(0x3f000000u);  // 0.5
    const float r = std::bit_cast<float>(abs) + magic;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(r) - 0x3f000000u));
  }
  const uint32_t mantissa_odd = (abs >> 13) & 1;
  const uint32_t rounded = abs + 0xc8000fff + mantissa_odd;  // rebias exponent and round
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float BF16ToF32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t F32ToBF16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 64);  // quiet nan
  return static_cast<uint16_t>((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

}  // namespace shardrun
