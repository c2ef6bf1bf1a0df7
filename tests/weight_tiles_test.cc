// The CPU backend's weight copies: float matrices in the 4-row interleaved layout
// (weight_tiles.h) must give the same bits as the file's layout, since the layout exists only
// to make the memory stream sequential; and the huge-page storage they live in must behave
// like any other AlignedStorage.
#include "kernels/cpu/weight_tiles.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/aligned_storage.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/cpu_level.h"
#include "kernels/quantize.h"
#include "kernels/tensor_type.h"

namespace shardrun {
namespace {

std::vector<float> Random(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = dist(rng);
  return v;
}

// Every kernel table this CPU can run that tiles float weights.
std::vector<const CpuKernels*> FloatTilingTables() {
  std::vector<const CpuKernels*> all = {&GenericKernels()};
#if defined(__x86_64__)
  if (CpuSupportsLevel(CpuLevel::kAvx2)) all.push_back(&Avx2Kernels());
  if (CpuSupportsLevel(CpuLevel::kAvx512)) all.push_back(&Avx512Kernels());
  if (CpuHasAvx512Vnni()) all.push_back(&Avx512VnniKernels());
#endif
  std::vector<const CpuKernels*> tables;
  for (const CpuKernels* k : all) {
    if (k->tile_float) tables.push_back(k);
  }
  return tables;
}

// out = w x through `k`, the weights in the file's layout or tiled, rows computed in `ranges`
// calls split at odd places.
std::vector<float> Product(const CpuKernels& k, TensorType type, const std::vector<uint8_t>& w,
                           int64_t rows, int64_t cols, const std::vector<float>& x, int n,
                           bool tiled, int ranges) {
  std::vector<uint8_t> tiles;
  MatMulArgs a;
  a.w = w.data();
  a.w_row_bytes = static_cast<int64_t>(TensorBytes(type, cols));
  if (tiled) {
    tiles.resize(w.size());
    TileRows(type, w.data(), rows, cols, 0, rows, tiles.data());
    a.w = tiles.data();
    a.tiled = true;
  }
  std::vector<float> xf(x.size());
  for (int t = 0; t < n; ++t) {
    const float* in = x.data() + t * cols;
    float* rounded = xf.data() + t * cols;
    if (type == TensorType::kF16) {
      k.round_f16(in, rounded, cols);
    } else if (type == TensorType::kBF16) {
      k.round_bf16(in, rounded, cols);
    } else {
      std::memcpy(rounded, in, cols * sizeof(float));
    }
  }
  a.rows = rows;
  a.cols = cols;
  a.xf = xf.data();
  a.x_stride = cols;
  a.n = n;
  std::vector<float> out(static_cast<size_t>(n * rows));
  a.out = out.data();
  a.out_stride = rows;
  const MatMulFn fn = type == TensorType::kF32   ? k.matmul_f32
                      : type == TensorType::kF16 ? k.matmul_f16
                                                 : k.matmul_bf16;
  for (int i = 0; i < ranges; ++i) fn(a, rows * i / ranges, rows * (i + 1) / ranges);
  return out;
}

TEST(WeightTilesTest, TiledFloatProductsEqualFileLayoutBitForBit) {
  const std::vector<const CpuKernels*> tables = FloatTilingTables();
  if (tables.empty()) GTEST_SKIP() << "no kernel table on this CPU tiles float weights";
  struct Shape {
    int64_t rows;
    int64_t cols;
  };
  // Rows not a multiple of 4 (a file-layout tail), rows of one to many 64-byte lines.
  const Shape shapes[] = {{4, 32}, {7, 64}, {33, 128}, {67, 512}, {130, 2048}};
  for (const CpuKernels* k : tables) {
    for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16}) {
      for (const Shape& s : shapes) {
        if (!FloatRowsTileable(type, s.cols)) continue;
        const std::vector<float> values = Random(s.rows * s.cols, 3);
        std::vector<uint8_t> w(TensorBytes(type, s.cols) * s.rows);
        for (int64_t r = 0; r < s.rows; ++r) {
          QuantizeRow(type, std::span<const float>(values.data() + r * s.cols, s.cols),
                      w.data() + r * TensorBytes(type, s.cols));
        }
        for (int n : {1, 5}) {
          SCOPED_TRACE(absl::StrCat(std::string(k->name), " ", std::string(TensorTypeName(type)),
                                    " rows=", s.rows, " cols=", s.cols, " n=", n));
          const std::vector<float> x = Random(n * s.cols, 7);
          const std::vector<float> file = Product(*k, type, w, s.rows, s.cols, x, n, false, 1);
          for (int ranges : {1, 3}) {
            const std::vector<float> tiled =
                Product(*k, type, w, s.rows, s.cols, x, n, true, ranges);
            ASSERT_EQ(0, std::memcmp(file.data(), tiled.data(), file.size() * sizeof(float)))
                << "ranges=" << ranges;
          }
        }
      }
    }
  }
}

TEST(WeightTilesTest, FloatLayoutInterleavesFourRowsByLine) {
  // 5 rows of 32 F32 values (two 64-byte lines each): rows 0-3 tiled, row 4 as in the file.
  constexpr int64_t kRows = 5;
  constexpr int64_t kCols = 32;
  std::vector<float> m(kRows * kCols);
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<float>(i);
  std::vector<float> tiled(m.size());
  TileRows(TensorType::kF32, reinterpret_cast<const uint8_t*>(m.data()), kRows, kCols, 0, kRows,
           reinterpret_cast<uint8_t*>(tiled.data()));
  for (int line = 0; line < 2; ++line) {
    for (int r = 0; r < 4; ++r) {
      for (int i = 0; i < 16; ++i) {
        ASSERT_EQ(tiled[(line * 4 + r) * 16 + i], m[r * kCols + line * 16 + i])
            << "line " << line << " row " << r << " value " << i;
      }
    }
  }
  for (int64_t c = 0; c < kCols; ++c) EXPECT_EQ(tiled[4 * kCols + c], m[4 * kCols + c]);
  EXPECT_FALSE(FloatRowsTileable(TensorType::kF16, 48));  // 96-byte rows
  EXPECT_FALSE(FloatRowsTileable(TensorType::kQ8_0, 64));
  EXPECT_TRUE(FloatRowsTileable(TensorType::kBF16, 2048));
}

TEST(WeightTilesTest, LargeStorageIsAlignedZeroedAndGrows) {
  AlignedStorage storage;
  for (size_t bytes : {size_t{1000}, size_t{3} << 20, size_t{5} << 20, size_t{4} << 20}) {
    SCOPED_TRACE(bytes);
    auto* p = static_cast<uint8_t*>(storage.Reserve(bytes));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % AlignedStorage::kAlignment, 0u);
    EXPECT_GE(storage.capacity(), bytes);
    if (bytes == (size_t{4} << 20)) {  // no growth: the old contents stay
      EXPECT_EQ(p[bytes - 1], 0xab);
      continue;
    }
    for (size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(p[i], 0) << i;
    // The spare line past the end is there to be read.
    EXPECT_EQ(p[bytes + AlignedStorage::kAlignment - 1], 0);
    std::memset(p, 0xab, bytes);
  }
}

}  // namespace
}  // namespace shardrun
