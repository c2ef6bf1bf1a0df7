#include "kernels/tensor_type.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gtest/gtest.h"

namespace shardrun {
namespace {

TEST(TensorTypeTest, F16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(F32ToF16(f), h) << std::hex << h;
  }
}

TEST(TensorTypeTest, F16RoundsToNearestEven) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3c00);
  // 1 + 2^-11 lies halfway between 1 and the next half: ties go to even (1.0).
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7c00);  // rounds up to infinity
  EXPECT_EQ(F32ToF16(65504.0f), 0x7bff);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(TensorTypeTest, BF16) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3f80);
  EXPECT_EQ(BF16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(BF16ToF32(F32ToBF16(3.140625f)), 3.140625f);
}

TEST(TensorTypeTest, Sizes) {
  EXPECT_EQ(TensorBytes(TensorType::kQ4_0, 64), 36u);
  EXPECT_EQ(TensorBytes(TensorType::kQ8_0, 64), 68u);
  EXPECT_EQ(TensorBytes(TensorType::kF16, 3), 6u);
  EXPECT_EQ(GgmlTypeName(12), "q4_k");
  EXPECT_FALSE(TensorTypeFromGgml(12).has_value());
  EXPECT_EQ(TensorTypeFromGgml(30), TensorType::kBF16);
}

}  // namespace
}  // namespace shardrun
