#include "proto/activation_encoding.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_format.h"
#include "kernels/quantize.h"
#include "kernels/tensor_type.h"

namespace shardrun {
namespace {

// Every value crosses the wire at each hop, so the f16 conversions are written without
// branches (selects by mask) for the compiler to vectorise; they equal F32ToF16/F16ToF32 bit
// for bit (checked for every input when written, and by tests/message_codec_test.cc).

void EncodeF16(std::span<const float> x, uint8_t* out) {
  for (size_t i = 0; i < x.size(); ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(x[i]);
    const uint32_t sign = (bits >> 16) & 0x8000;
    const uint32_t abs = bits & 0x7fffffff;
    // Below 2^-14 the half is subnormal: adding 0.5 rounds the value into the low mantissa
    // bits of a float with exponent -1.
    const uint32_t subnormal =
        std::bit_cast<uint32_t>(std::bit_cast<float>(abs) + 0.5f) - 0x3f000000u;
    // Rebias the exponent (127 -> 15) and round to nearest even on the 13 dropped bits.
    const uint32_t normal = (abs + 0xc8000fffu + ((abs >> 13) & 1)) >> 13;
    // At 65520 and above: infinity; NaN stays a (quiet) NaN.
    const uint32_t special = 0x7c00u | ((0u - static_cast<uint32_t>(abs > 0x7f800000u)) & 0x200u);
    const uint32_t is_subnormal = 0u - static_cast<uint32_t>(abs < 0x38800000u);
    const uint32_t is_special = 0u - static_cast<uint32_t>(abs >= 0x477ff000u);
    uint32_t h = (subnormal & is_subnormal) | (normal & ~is_subnormal);
    h = (special & is_special) | (h & ~is_special);
    const uint16_t half = static_cast<uint16_t>(sign | h);
    std::memcpy(out + i * sizeof(half), &half, sizeof(half));
  }
}

void DecodeF16(const uint8_t* data, std::span<float> out) {
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t half;
    std::memcpy(&half, data + i * sizeof(half), sizeof(half));
    const uint32_t h = half;
    const uint32_t shifted = (h & 0x7fffu) << 13;  // exponent and mantissa in float position
    const uint32_t exponent = shifted & 0x0f800000u;
    const uint32_t normal = shifted + 0x38000000u;  // rebias 15 -> 127
    const uint32_t inf_nan = normal + 0x38000000u;  // exponent all ones
    // A subnormal half m * 2^-24 is (1 + m * 2^-10) * 2^-14 - 2^-14, exact in float.
    const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(normal + 0x00800000u) -
                                                       std::bit_cast<float>(0x38800000u));
    const uint32_t is_inf_nan = 0u - static_cast<uint32_t>(exponent == 0x0f800000u);
    const uint32_t is_subnormal = 0u - static_cast<uint32_t>(exponent == 0);
    uint32_t bits = (inf_nan & is_inf_nan) | (normal & ~is_inf_nan);
    bits = (subnormal & is_subnormal) | (bits & ~is_subnormal);
    out[i] = std::bit_cast<float>(bits | (h & 0x8000u) << 16);
  }
}

void EncodeQ8_0(std::span<const float> x, uint8_t* out) {
  for (size_t b = 0; b < x.size() / kQ8_0BlockSize; ++b) {
    BlockQ8_0 block;
    QuantizeRow(TensorType::kQ8_0, x.subspan(b * kQ8_0BlockSize, kQ8_0BlockSize), &block);
    std::memcpy(out + b * sizeof(block), &block, sizeof(block));
  }
}

void DecodeQ8_0(const uint8_t* data, std::span<float> out) {
  for (size_t b = 0; b < out.size() / kQ8_0BlockSize; ++b) {
    BlockQ8_0 block;
    std::memcpy(&block, data + b * sizeof(block), sizeof(block));
    const float d = F16ToF32(block.d);
    float* y = out.data() + b * kQ8_0BlockSize;
    for (int j = 0; j < kQ8_0BlockSize; ++j) y[j] = d * block.qs[j];  // as DequantizeRow
  }
}

}  // namespace

const char* ActivationTypeName(wire::ActivationType type) {
  switch (type) {
    case wire::ACTIVATION_F32:
      return "f32";
    case wire::ACTIVATION_F16:
      return "f16";
    case wire::ACTIVATION_Q8_0:
      return "q8_0";
    default:
      break;
  }
  return "unknown";
}

size_t EncodedActivationBytes(wire::ActivationType type, size_t n, size_t width) {
  switch (type) {
    case wire::ACTIVATION_F32:
      return n * width * sizeof(float);
    case wire::ACTIVATION_F16:
      return n * width * sizeof(uint16_t);
    case wire::ACTIVATION_Q8_0:
      return n * (width / kQ8_0BlockSize) * sizeof(BlockQ8_0);
    default:
      break;
  }
  return 0;
}

void EncodeActivations(wire::ActivationType type, std::span<const float> x, uint8_t* out) {
  if (x.empty()) return;  // `out` may be null then, which memcpy must not see
  switch (type) {
    case wire::ACTIVATION_F32:
      std::memcpy(out, x.data(), x.size_bytes());
      return;
    case wire::ACTIVATION_F16:
      EncodeF16(x, out);
      return;
    case wire::ACTIVATION_Q8_0:
      EncodeQ8_0(x, out);
      return;
    default:
      break;
  }
}

absl::Status DecodeActivations(wire::ActivationType type, std::span<const uint8_t> data,
                               std::span<float> out) {
  if (!wire::ActivationType_IsValid(type)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("activations: unknown type %d", static_cast<int>(type)));
  }
  if (type == wire::ACTIVATION_Q8_0 && out.size() % kQ8_0BlockSize != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "activations: %d q8_0 values are not whole blocks of %d", out.size(), kQ8_0BlockSize));
  }
  const size_t expected = EncodedActivationBytes(type, 1, out.size());
  if (data.size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrFormat("activations: %d bytes for %d %s values, expected %d", data.size(),
                        out.size(), ActivationTypeName(type), expected));
  }
  if (out.empty()) return absl::OkStatus();
  switch (type) {
    case wire::ACTIVATION_F32:
      std::memcpy(out.data(), data.data(), data.size());
      break;
    case wire::ACTIVATION_F16:
      DecodeF16(data.data(), out);
      break;
    case wire::ACTIVATION_Q8_0:
      DecodeQ8_0(data.data(), out);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace shardrun
