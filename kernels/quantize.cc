#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shardrun {
namespace {

void QuantizeQ8_0(std::span<const float> x, BlockQ8_0* out) {
  const size_t blocks = x.size() / kQ8_0BlockSize;
  for (size_t b = 0; b < blocks; ++b) {
    const float* v = x.data() + b * kQ8_0BlockSize;
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0BlockSize; ++j) amax = std::max(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = F32ToF16(d);
    for (int j = 0; j < kQ8_0BlockSize; ++j) {
      out[b].qs[j] = static_cast<int8_t>(std::roundf(v[j] * id));
    }
  }
}

void QuantizeQ4_0(std::span<const float> x, BlockQ4_0* out) {
  const size_t blocks = x.size() / kQ4_0BlockSize;
  for (size_t b = 0; b < blocks; ++b) {
    const float* v = x.data() + b * kQ4_0BlockSize;
    float amax = 0.0f;
    float max = 0.0f;  // the value of largest magnitude, with its sign
    for (int j = 0; j < kQ4_0BlockSize; ++j) {
      if (amax < std::fabs(v[j])) {
        amax = std::fabs(v[j]);
        max = v[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = F32ToF16(d);
    for (int j = 0; j < kQ4_0BlockSize / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(v[j] * id + 8.5f)));
      const int hi = std::min(
          15, static_cast<int>(static_cast<int8_t>(v[j + kQ4_0BlockSize / 2] * id + 8.5f)));
      out[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

}  // namespace

void QuantizeRow(TensorType type, std::span<const float> x, void* out) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out, x.data(), x.size_bytes());
      return;
    case TensorType::kF16: {
      auto* h = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < x.size(); ++i) h[i] = F32ToF16(x[i]);
      return;
    }
    case TensorType::kBF16: {
      auto* h = static_cast<uint16_t*>(out);
      for (size_t i = 0; i < x.size(); ++i) h[i] = F32ToBF16(x[i]);
      return;
    }
    case TensorType::kQ8_0:
      QuantizeQ8_0(x, static_cast<BlockQ8_0*>(out));
      return;
    case TensorType::kQ4_0:
      QuantizeQ4_0(x, static_cast<BlockQ4_0*>(out));
      return;
    case TensorType::kQ8Group:
      break;
  }
}

void DequantizeRow(TensorType type, const void* data, std::span<float> out,
                   const float* group_scales, int group_size) {
  const size_t n = out.size();
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out.data(), data, n * sizeof(float));
      return;
    case TensorType::kF16: {
      const auto* h = static_cast<const uint16_t*>(data);
      for (size_t i = 0; i < n; ++i) out[i] = F16ToF32(h[i]);
      return;
    }
    case TensorType::kBF16: {
      const auto* h = static_cast<const uint16_t*>(data);
      for (size_t i = 0; i < n; ++i) out[i] = BF16ToF32(h[i]);
      return;
    }
    case TensorType::kQ8_0: {
      const auto* blocks = static_cast<const BlockQ8_0*>(data);
      for (size_t i = 0; i < n; ++i) {
        const BlockQ8_0& b = blocks[i / kQ8_0BlockSize];
        out[i] = F16ToF32(b.d) * b.qs[i % kQ8_0BlockSize];
      }
      return;
    }
    case TensorType::kQ4_0: {
      const auto* blocks = static_cast<const BlockQ4_0*>(data);
      for (size_t i = 0; i < n; ++i) {
        const BlockQ4_0& b = blocks[i / kQ4_0BlockSize];
        const int j = static_cast<int>(i % kQ4_0BlockSize);
        const int nibble = j < kQ4_0BlockSize / 2 ? (b.qs[j] & 0x0f) : (b.qs[j - 16] >> 4);
        out[i] = F16ToF32(b.d) * static_cast<float>(nibble - 8);
      }
      return;
    }
    case TensorType::kQ8Group: {
      const auto* q = static_cast<const int8_t*>(data);
      for (size_t i = 0; i < n; ++i) out[i] = q[i] * group_scales[i / group_size];
      return;
    }
  }
}

}  // namespace shardrun
