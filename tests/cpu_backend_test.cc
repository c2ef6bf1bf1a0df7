// The CPU backend against straightforward double-precision references, every SIMD level
// against the generic one, and the kQ8Group product against a transcription of runq.c.
#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/cpu_level.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/weight_tiles.h"
#include "kernels/quantize.h"
#include "kernels/tensor_type.h"
#include "model/tensor_view.h"
#include "tests/random_weights.h"

namespace shardrun {
namespace {

using ::shardrun::testing::HostWeight;
using ::shardrun::testing::MakeWeight;
using ::shardrun::testing::RandomVector;

constexpr TensorType kAllTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16,
                                    TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ8Group};

std::vector<CpuLevel> SupportedLevels() {
  std::vector<CpuLevel> levels;
  for (CpuLevel l : {CpuLevel::kGeneric, CpuLevel::kAvx2, CpuLevel::kAvx512}) {
    if (CpuSupportsLevel(l)) levels.push_back(l);
  }
  return levels;
}

std::unique_ptr<CpuBackend> MakeBackend(int threads, CpuLevel level) {
  absl::StatusOr<std::unique_ptr<CpuBackend>> backend = CpuBackend::Create(threads, level);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? *std::move(backend) : nullptr;
}

std::unique_ptr<DeviceBuffer> Upload(Backend& backend, const std::vector<float>& host) {
  auto buffer = backend.Allocate(static_cast<int64_t>(host.size()));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  backend.Write(**buffer, 0, host);
  return *std::move(buffer);
}

std::vector<float> Download(Backend& backend, const DeviceBuffer& buffer) {
  std::vector<float> host(buffer.size());
  backend.Read(buffer, 0, host);
  return host;
}

// What llama.cpp's AVX2 quantize_row_q8_0 makes of a row, as floats: per block of 32,
// amax = max |x|, d = f16(amax / 127), q = round_half_even(x * 127 / amax), value = q * d.
std::vector<float> Q8_0ActivationValues(const float* x, int64_t cols) {
  std::vector<float> out(cols);
  for (int64_t b = 0; b < cols; b += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const float d = F16ToF32(F32ToF16(amax / 127.0f));
    const float id = amax == 0.0f ? 0.0f : 127.0f / amax;
    for (int j = 0; j < 32; ++j) {
      const float q = std::max(-128.0f, std::min(127.0f, std::nearbyint(x[b + j] * id)));
      out[b + j] = q * d;
    }
  }
  return out;
}

// The activations a weight type's dot product sees, per the reference semantics.
std::vector<float> ActivationValues(TensorType type, const std::vector<float>& x, int64_t cols) {
  std::vector<float> out(x.size());
  for (size_t t = 0; t < x.size() / cols; ++t) {
    const float* row = x.data() + t * cols;
    std::vector<float> v(row, row + cols);
    switch (type) {
      case TensorType::kF16:
        for (float& f : v) f = F16ToF32(F32ToF16(f));
        break;
      case TensorType::kBF16:
        for (float& f : v) f = BF16ToF32(F32ToBF16(f));
        break;
      case TensorType::kQ8_0:
      case TensorType::kQ4_0:
        v = Q8_0ActivationValues(row, cols);
        break;
      default:
        break;
    }
    std::copy(v.begin(), v.end(), out.begin() + t * cols);
  }
  return out;
}

// llama2.c runq.c, transcribed literally (GS = group_size), except that a group of zeros
// quantizes to zeros instead of runq.c's division by zero.
void RunqQuantize(const float* x, int n, int gs, int8_t* q, float* s) {
  int num_groups = n / gs;
  float Q_MAX = 127.0f;
  for (int group = 0; group < num_groups; group++) {
    float wmax = 0.0;
    for (int i = 0; i < gs; i++) {
      float val = fabs(x[group * gs + i]);
      if (val > wmax) wmax = val;
    }
    float scale = wmax / Q_MAX;
    s[group] = scale;
    for (int i = 0; i < gs; i++) {
      float quant_value = x[group * gs + i] / scale;
      int8_t quantized = scale == 0.0f ? 0 : (int8_t)round(quant_value);
      q[group * gs + i] = quantized;
    }
  }
}

void RunqMatmul(float* xout, const int8_t* xq, const float* xs, const int8_t* wq, const float* ws,
                int n, int d, int gs) {
  for (int i = 0; i < d; i++) {
    float val = 0.0f;
    int32_t ival = 0;
    int in = i * n;
    int j;
    for (j = 0; j <= n - gs; j += gs) {
      for (int k = 0; k < gs; k++) {
        ival += ((int32_t)xq[j + k]) * ((int32_t)wq[in + j + k]);
      }
      val += ((float)ival) * ws[(in + j) / gs] * xs[j / gs];
      ival = 0;
    }
    xout[i] = val;
  }
}

struct MatMulShape {
  int64_t rows;
  int64_t cols;
};

// Odd row counts (tails of the 4-row tiles and of the 16-row chunks), block counts that
// leave Q8_0 pairs and Q4_0 groups of 4 incomplete, and float rows that are not whole
// vectors.
std::vector<MatMulShape> ShapesFor(TensorType type) {
  if (type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16) {
    return {{1, 20}, {7, 172}, {33, 64}, {67, 256}, {131, 1000}, {300, 512}};
  }
  return {{1, 32}, {7, 96}, {33, 160}, {67, 256}, {130, 384}, {300, 1024}};
}

// Runs a product on the backend; `x` is [n][cols].
std::vector<float> RunMatMul(CpuBackend& backend, const HostWeight& w, const std::vector<float>& x,
                             int n) {
  auto weight = backend.LoadWeight(w.view);
  EXPECT_TRUE(weight.ok()) << weight.status();
  auto in = Upload(backend, x);
  auto out = backend.Allocate(n * w.view.rows());
  EXPECT_TRUE(out.ok());
  backend.MatMul(**out, **weight, *in, n);
  EXPECT_TRUE(backend.Synchronize().ok());
  return Download(backend, **out);
}

std::vector<float> MatMulInput(int64_t cols, int n, uint32_t seed) {
  std::vector<float> x = RandomVector(n * cols, seed);
  // A block of zeros (the quantizers' amax == 0 case) and one value far above the rest.
  if (cols >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
  x[cols - 1] = 40.0f;
  return x;
}

// |out - ref| <= tolerance * sum |w * x| per output: the reference uses the same rounded or
// quantized activations in double precision, so the only differences left are float32
// rounding in the accumulation (about 1e-7 of that sum for these sizes).
constexpr double kMatMulTolerance = 2e-6;

TEST(CpuMatMulTest, EveryTypeAndLevelMatchesDoubleReference) {
  for (CpuLevel level : SupportedLevels()) {
    std::unique_ptr<CpuBackend> backend = MakeBackend(2, level);
    ASSERT_NE(backend, nullptr);
    for (TensorType type : kAllTypes) {
      if (type == TensorType::kQ8Group) continue;  // bit-exact test below
      for (const MatMulShape& shape : ShapesFor(type)) {
        for (int n : {1, 7}) {
          SCOPED_TRACE(absl::StrCat(std::string(CpuLevelName(level)), " ",
                                    std::string(TensorTypeName(type)), " rows=", shape.rows,
                                    " cols=", shape.cols, " n=", n));
          const HostWeight w = MakeWeight(type, shape.rows, shape.cols, 17);
          const std::vector<float> x = MatMulInput(shape.cols, n, 5);
          const std::vector<float> xv = ActivationValues(type, x, shape.cols);
          const std::vector<float> out = RunMatMul(*backend, w, x, n);
          for (int t = 0; t < n; ++t) {
            for (int64_t r = 0; r < shape.rows; ++r) {
              double ref = 0.0;
              double magnitude = 0.0;
              for (int64_t c = 0; c < shape.cols; ++c) {
                const double p =
                    static_cast<double>(w.values[r * shape.cols + c]) * xv[t * shape.cols + c];
                ref += p;
                magnitude += std::fabs(p);
              }
              ASSERT_NEAR(out[t * shape.rows + r], ref, kMatMulTolerance * magnitude + 1e-30)
                  << "t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

// The reference above would also pass if activations were not rounded at all when the
// rounding happens to be small; these inputs make it decisive.
TEST(CpuMatMulTest, ActivationsAreRoundedOrQuantizedFirst) {
  constexpr int64_t kCols = 64;
  for (CpuLevel level : SupportedLevels()) {
    SCOPED_TRACE(std::string(CpuLevelName(level)));
    std::unique_ptr<CpuBackend> backend = MakeBackend(1, level);
    ASSERT_NE(backend, nullptr);
    // 1 + 2^-12 rounds to 1 in F16 and BF16, so a row of ones gives exactly kCols.
    const std::vector<float> x(kCols, 1.0f + std::ldexp(1.0f, -12));
    for (TensorType type : {TensorType::kF16, TensorType::kBF16}) {
      HostWeight w = MakeWeight(type, 1, kCols, 1);
      std::vector<float> ones(kCols, 1.0f);
      QuantizeRow(type, ones, w.bytes.data());
      EXPECT_EQ(RunMatMul(*backend, w, x, 1)[0], static_cast<float>(kCols));
    }
    // Q8_0 activations: x = 0.3 in a block whose amax is 1 quantizes to 38 * f16(1/127).
    std::vector<float> y(kCols, 0.3f);
    y[0] = 1.0f;
    y[32] = 1.0f;
    HostWeight w = MakeWeight(TensorType::kQ8_0, 1, kCols, 1);
    std::vector<float> unit(kCols, 0.0f);
    unit[5] = 1.0f;  // picks y[5]; d = 1/127 stored, q = 127
    QuantizeRow(TensorType::kQ8_0, unit, w.bytes.data());
    const float expected =
        127.0f * F16ToF32(F32ToF16(1.0f / 127.0f)) * 38.0f * F16ToF32(F32ToF16(1.0f / 127.0f));
    EXPECT_FLOAT_EQ(RunMatMul(*backend, w, y, 1)[0], expected);
  }
}

TEST(CpuMatMulTest, EveryLevelAgreesWithGeneric) {
  std::unique_ptr<CpuBackend> generic = MakeBackend(1, CpuLevel::kGeneric);
  ASSERT_NE(generic, nullptr);
  for (CpuLevel level : SupportedLevels()) {
    if (level == CpuLevel::kGeneric) continue;
    std::unique_ptr<CpuBackend> backend = MakeBackend(3, level);
    ASSERT_NE(backend, nullptr);
    for (TensorType type : kAllTypes) {
      for (const MatMulShape& shape : ShapesFor(type)) {
        for (int n : {1, 7}) {
          SCOPED_TRACE(absl::StrCat(std::string(CpuLevelName(level)), " ",
                                    std::string(TensorTypeName(type)), " rows=", shape.rows,
                                    " cols=", shape.cols, " n=", n));
          const HostWeight w = MakeWeight(type, shape.rows, shape.cols, 23);
          const std::vector<float> x = MatMulInput(shape.cols, n, 9);
          const std::vector<float> xv = ActivationValues(type, x, shape.cols);
          const std::vector<float> expected = RunMatMul(*generic, w, x, n);
          const std::vector<float> out = RunMatMul(*backend, w, x, n);
          for (int t = 0; t < n; ++t) {
            for (int64_t r = 0; r < shape.rows; ++r) {
              const size_t i = t * shape.rows + r;
              if (type == TensorType::kQ8Group) {  // one shared, runq-exact implementation
                ASSERT_EQ(out[i], expected[i]) << "t=" << t << " r=" << r;
                continue;
              }
              double magnitude = 0.0;
              for (int64_t c = 0; c < shape.cols; ++c) {
                magnitude += std::fabs(static_cast<double>(w.values[r * shape.cols + c]) *
                                       xv[t * shape.cols + c]);
              }
              // Same rounded or quantized inputs and exact int32 block sums: only the float
              // summation order differs.
              ASSERT_NEAR(out[i], expected[i], 1e-6 * magnitude + 1e-30) << "t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

// |out - expected| <= tolerance * sum |w * x| for every output (`xv`: the activations as
// the weight type sees them).
void CompareWithinSumOfMagnitudes(const HostWeight& w, const std::vector<float>& xv,
                                  const MatMulShape& shape, int n, const std::vector<float>& out,
                                  const std::vector<float>& expected, double tolerance) {
  for (int t = 0; t < n; ++t) {
    for (int64_t r = 0; r < shape.rows; ++r) {
      const size_t i = t * shape.rows + r;
      double magnitude = 0.0;
      for (int64_t c = 0; c < shape.cols; ++c) {
        magnitude +=
            std::fabs(static_cast<double>(w.values[r * shape.cols + c]) * xv[t * shape.cols + c]);
      }
      ASSERT_NEAR(out[i], expected[i], tolerance * magnitude) << "t=" << t << " r=" << r;
    }
  }
}

// Every kernel table this CPU can run, including AVX-512 without VNNI, which the backend
// never picks on a CPU that has VNNI.
std::vector<const CpuKernels*> SupportedKernelTables() {
  std::vector<const CpuKernels*> tables = {&GenericKernels()};
#if defined(__x86_64__)
  if (CpuSupportsLevel(CpuLevel::kAvx2)) tables.push_back(&Avx2Kernels());
  if (CpuSupportsLevel(CpuLevel::kAvx512)) tables.push_back(&Avx512Kernels());
  if (CpuHasAvx512Vnni()) tables.push_back(&Avx512VnniKernels());
#endif
  return tables;
}

// A product straight through a kernel table, preparing the activations as the backend does;
// with `tiled`, on a tiled copy of the weights (weight_tiles.h). `ranges` splits the rows into
// that many pieces at odd places, each computed by its own call.
std::vector<float> RunKernels(const CpuKernels& k, const HostWeight& w, const std::vector<float>& x,
                              int n, bool tiled = false, int ranges = 1) {
  const int64_t rows = w.view.rows();
  const int64_t cols = w.view.cols();
  std::vector<float> xf(x.size());
  std::vector<int8_t> xq(x.size());
  std::vector<float> xs(x.size());
  std::vector<int32_t> xsum(x.size());
  std::vector<uint8_t> tiles;
  MatMulArgs a;
  a.w = static_cast<const uint8_t*>(w.view.data);
  a.w_row_bytes = static_cast<int64_t>(TensorBytes(w.view.type, cols));
  if (tiled) {
    tiles.resize(w.bytes.size());
    TileRows(w.view.type, w.bytes.data(), rows, cols, 0, rows, tiles.data());
    a.w = tiles.data();
    a.tiled = true;
  }
  a.rows = rows;
  a.cols = cols;
  a.w_scales = w.view.group_scales;
  a.group_size = w.view.group_size;
  a.x_stride = cols;
  a.xs_stride = cols;
  a.n = n;
  std::vector<float> out(n * rows);
  a.out = out.data();
  a.out_stride = rows;
  MatMulFn fn = nullptr;
  for (int t = 0; t < n; ++t) {
    const float* row = x.data() + t * cols;
    switch (w.view.type) {
      case TensorType::kF32:
        std::copy(row, row + cols, xf.begin() + t * cols);
        fn = k.matmul_f32;
        break;
      case TensorType::kF16:
        k.round_f16(row, xf.data() + t * cols, cols);
        fn = k.matmul_f16;
        break;
      case TensorType::kBF16:
        k.round_bf16(row, xf.data() + t * cols, cols);
        fn = k.matmul_bf16;
        break;
      case TensorType::kQ8_0:
        k.quantize_q8_0(row, cols, xq.data() + t * cols, xs.data() + t * cols,
                        xsum.data() + t * cols);
        fn = k.matmul_q8_0;
        break;
      case TensorType::kQ4_0:
        k.quantize_q4_0(row, cols, xq.data() + t * cols, xs.data() + t * cols,
                        xsum.data() + t * cols);
        fn = k.matmul_q4_0;
        break;
      case TensorType::kQ8Group:
        QuantizeQ8Group(row, cols, w.view.group_size, xq.data() + t * cols, xs.data() + t * cols);
        fn = k.matmul_q8_group;
        break;
    }
  }
  a.xf = xf.data();
  a.xq = xq.data();
  a.xs = xs.data();
  a.xsum = xsum.data();
  for (int i = 0; i < ranges; ++i) fn(a, rows * i / ranges, rows * (i + 1) / ranges);
  return out;
}

TEST(CpuMatMulTest, EveryKernelTableAgreesWithGeneric) {
  for (const CpuKernels* k : SupportedKernelTables()) {
    for (TensorType type : kAllTypes) {
      for (const MatMulShape& shape : ShapesFor(type)) {
        for (int n : {1, 7}) {
          SCOPED_TRACE(absl::StrCat(std::string(k->name), " ", std::string(TensorTypeName(type)),
                                    " rows=", shape.rows, " cols=", shape.cols, " n=", n));
          const HostWeight w = MakeWeight(type, shape.rows, shape.cols, 29);
          const std::vector<float> x = MatMulInput(shape.cols, n, 13);
          const std::vector<float> xv = ActivationValues(type, x, shape.cols);
          const std::vector<float> expected = RunKernels(GenericKernels(), w, x, n);
          std::vector<std::vector<float>> outs = {RunKernels(*k, w, x, n)};
          if ((type == TensorType::kQ4_0 && k->tile_q4_0) ||
              (type == TensorType::kQ8_0 && k->tile_q8_0)) {
            outs.push_back(RunKernels(*k, w, x, n, /*tiled=*/true));
            // Row ranges that cut tiles (the backend's never do, but the kernels allow it).
            outs.push_back(RunKernels(*k, w, x, n, /*tiled=*/true, /*ranges=*/3));
          }
          for (size_t o = 0; o < outs.size(); ++o) {
            SCOPED_TRACE(o == 0 ? "file layout" : o == 1 ? "tiled" : "tiled, split rows");
            CompareWithinSumOfMagnitudes(w, xv, shape, n, outs[o], expected,
                                         type == TensorType::kQ8Group ? 0.0 : 1e-6);
          }
        }
      }
    }
  }
}

TEST(CpuMatMulTest, QuantizersAreBitIdenticalAcrossLevels) {
  constexpr int64_t kCols = 1024;
  std::vector<float> x = RandomVector(kCols, 3);
  std::fill(x.begin(), x.begin() + 32, 0.0f);
  x[100] = 1e-30f;  // a block whose scale underflows in F16
  for (int i = 200; i < 232; ++i) x[i] = (i % 2 ? 1.5f : -2.5f) / 127.0f * 3.0f;  // ties
  x[500] = 70000.0f;  // beyond F16's range
  const CpuKernels& generic = GenericKernels();
  std::vector<int8_t> q_ref(kCols);
  std::vector<float> d_ref(kCols / 32);
  std::vector<int32_t> sum_ref(kCols / 32);
  generic.quantize_q8_0(x.data(), kCols, q_ref.data(), d_ref.data(), sum_ref.data());
  for (int64_t b = 0; b < kCols / 32; ++b) {
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) sum += q_ref[b * 32 + j];
    ASSERT_EQ(sum_ref[b], sum) << b;
  }
  std::vector<float> f16_ref(kCols), bf16_ref(kCols);
  generic.round_f16(x.data(), f16_ref.data(), kCols - 3);
  generic.round_bf16(x.data(), bf16_ref.data(), kCols - 3);
  const std::vector<float> q_values = Q8_0ActivationValues(x.data(), kCols);
  for (int64_t i = 0; i < kCols; ++i) {
    ASSERT_EQ(q_ref[i] * d_ref[i / 32], q_values[i]) << i;
  }
  for (CpuLevel level : SupportedLevels()) {
    SCOPED_TRACE(std::string(CpuLevelName(level)));
    const CpuKernels& k = KernelsFor(level);
    std::vector<int8_t> q(kCols);
    std::vector<float> d(kCols / 32);
    std::vector<int32_t> sums(kCols / 32);
    k.quantize_q8_0(x.data(), kCols, q.data(), d.data(), sums.data());
    EXPECT_EQ(q, q_ref);
    EXPECT_EQ(sums, sum_ref);
    EXPECT_EQ(std::memcmp(d.data(), d_ref.data(), d.size() * sizeof(float)), 0);
    std::vector<float> f16(kCols, -1.0f), bf16(kCols, -1.0f);
    k.round_f16(x.data(), f16.data(), kCols - 3);
    k.round_bf16(x.data(), bf16.data(), kCols - 3);
    EXPECT_EQ(std::memcmp(f16.data(), f16_ref.data(), (kCols - 3) * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(bf16.data(), bf16_ref.data(), (kCols - 3) * sizeof(float)), 0);
    EXPECT_EQ(f16[kCols - 1], -1.0f);  // nothing written past `count`
    EXPECT_EQ(bf16[kCols - 1], -1.0f);
  }
}

TEST(CpuMatMulTest, Q8GroupIsBitExactWithRunq) {
  for (CpuLevel level : SupportedLevels()) {
    for (int threads : {1, 3}) {
      std::unique_ptr<CpuBackend> backend = MakeBackend(threads, level);
      ASSERT_NE(backend, nullptr);
      for (int gs : {4, 32}) {
        for (const MatMulShape& shape :
             {MatMulShape{5, 64}, MatMulShape{43, 172 / 4 * 4}, MatMulShape{256, 768}}) {
          if (shape.cols % gs != 0) continue;
          SCOPED_TRACE(absl::StrCat(std::string(CpuLevelName(level)), " threads=", threads,
                                    " gs=", gs, " rows=", shape.rows, " cols=", shape.cols));
          const HostWeight w = MakeWeight(TensorType::kQ8Group, shape.rows, shape.cols, 31, gs);
          const int n = 7;
          std::vector<float> x = MatMulInput(shape.cols, n, 41);
          std::fill(x.begin(), x.begin() + gs, 0.0f);  // a zero group
          const std::vector<float> out = RunMatMul(*backend, w, x, n);
          const auto* wq = reinterpret_cast<const int8_t*>(w.bytes.data());
          for (int t = 0; t < n; ++t) {
            std::vector<int8_t> xq(shape.cols);
            std::vector<float> xs(shape.cols / gs);
            RunqQuantize(x.data() + t * shape.cols, static_cast<int>(shape.cols), gs, xq.data(),
                         xs.data());
            std::vector<float> expected(shape.rows);
            RunqMatmul(expected.data(), xq.data(), xs.data(), wq, w.scales.data(),
                       static_cast<int>(shape.cols), static_cast<int>(shape.rows), gs);
            for (int64_t r = 0; r < shape.rows; ++r) {
              ASSERT_EQ(out[t * shape.rows + r], expected[r]) << "t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

// Threads only split rows: every output is computed by the same instructions either way,
// and a batch of tokens gives what the tokens give one at a time.
TEST(CpuMatMulTest, ThreadsAndBatchingDoNotChangeResults) {
  for (CpuLevel level : SupportedLevels()) {
    std::unique_ptr<CpuBackend> one = MakeBackend(1, level);
    std::unique_ptr<CpuBackend> three = MakeBackend(3, level);
    ASSERT_NE(one, nullptr);
    ASSERT_NE(three, nullptr);
    for (TensorType type : kAllTypes) {
      SCOPED_TRACE(
          absl::StrCat(std::string(CpuLevelName(level)), " ", std::string(TensorTypeName(type))));
      const int64_t rows = 517;
      const int64_t cols = 512;
      const int n = 7;
      const HostWeight w = MakeWeight(type, rows, cols, 77);
      const std::vector<float> x = MatMulInput(cols, n, 78);
      const std::vector<float> a = RunMatMul(*one, w, x, n);
      const std::vector<float> b = RunMatMul(*three, w, x, n);
      ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
      for (int t = 0; t < n; ++t) {
        const std::vector<float> xt(x.begin() + t * cols, x.begin() + (t + 1) * cols);
        const std::vector<float> single = RunMatMul(*three, w, xt, 1);
        ASSERT_EQ(std::memcmp(single.data(), a.data() + t * rows, rows * sizeof(float)), 0)
            << "t=" << t;
      }
    }
  }
}

// --- Other operations ----------------------------------------------------------------------

TEST(CpuOpsTest, EmbedDequantizesRows) {
  std::unique_ptr<CpuBackend> backend = MakeBackend(2, BestCpuLevel());
  ASSERT_NE(backend, nullptr);
  for (TensorType type : kAllTypes) {
    SCOPED_TRACE(std::string(TensorTypeName(type)));
    const int64_t rows = 50;
    const int64_t cols = 96;
    const HostWeight w = MakeWeight(type, rows, cols, 5);
    auto table = backend->LoadWeight(w.view);
    ASSERT_TRUE(table.ok()) << table.status();
    const std::vector<int32_t> tokens = {3, 0, 49, 3, 17};
    auto out = backend->Allocate(tokens.size() * cols);
    ASSERT_TRUE(out.ok());
    backend->Embed(**out, **table, tokens);
    const std::vector<float> got = Download(*backend, **out);
    for (size_t t = 0; t < tokens.size(); ++t) {
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(got[t * cols + c], w.values[tokens[t] * cols + c]) << t << " " << c;
      }
    }
  }
}

TEST(CpuOpsTest, RmsNorm) {
  for (int threads : {1, 3}) {
    std::unique_ptr<CpuBackend> backend = MakeBackend(threads, BestCpuLevel());
    ASSERT_NE(backend, nullptr);
    for (int64_t size : {int64_t{64}, int64_t{172}, int64_t{5000}}) {
      for (int n : {1, 7}) {
        const float eps = 1e-5f;
        const std::vector<float> x = RandomVector(n * size, 8, 3.0f);
        HostWeight gain = MakeWeight(TensorType::kF32, 1, size, 9);
        gain.view.shape = {size};  // 1-D, as norms are stored
        auto g = backend->LoadWeight(gain.view);
        ASSERT_TRUE(g.ok()) << g.status();
        auto in = Upload(*backend, x);
        auto out = backend->Allocate(n * size);
        ASSERT_TRUE(out.ok());
        backend->RmsNorm(**out, *in, **g, n, eps);
        backend->RmsNorm(*in, *in, **g, n, eps);  // in place
        const std::vector<float> got = Download(*backend, **out);
        const std::vector<float> got_in_place = Download(*backend, *in);
        for (int t = 0; t < n; ++t) {
          double ss = 0.0;
          for (int64_t j = 0; j < size; ++j)
            ss += static_cast<double>(x[t * size + j]) * x[t * size + j];
          const double scale = 1.0 / std::sqrt(ss / size + eps);
          for (int64_t j = 0; j < size; ++j) {
            const double ref = gain.values[j] * (x[t * size + j] * scale);
            ASSERT_NEAR(got[t * size + j], ref, 1e-5 * std::fabs(ref) + 1e-6) << t << " " << j;
            ASSERT_EQ(got_in_place[t * size + j], got[t * size + j]);
          }
        }
      }
    }
  }
}

TEST(CpuOpsTest, Rope) {
  std::unique_ptr<CpuBackend> backend = MakeBackend(3, BestCpuLevel());
  ASSERT_NE(backend, nullptr);
  const int n_heads = 6;
  const int head_size = 16;
  for (int n : {1, 7}) {
    for (int pos0 : {0, 37}) {
      const int64_t width = n_heads * head_size;
      const std::vector<float> x = RandomVector(n * width, 12);
      auto buf = Upload(*backend, x);
      backend->Rope(*buf, n, n_heads, head_size, pos0, 10000.0f);
      const std::vector<float> got = Download(*backend, *buf);
      for (int t = 0; t < n; ++t) {
        for (int h = 0; h < n_heads; ++h) {
          for (int i = 0; i < head_size; i += 2) {
            const double angle =
                (pos0 + t) * std::pow(10000.0, -static_cast<double>(i) / head_size);
            const size_t at = t * width + h * head_size + i;
            const double re = x[at] * std::cos(angle) - x[at + 1] * std::sin(angle);
            const double im = x[at] * std::sin(angle) + x[at + 1] * std::cos(angle);
            // float angles of positions up to ~45 carry ~1e-5 of rounding.
            ASSERT_NEAR(got[at], re, 2e-5) << t << " " << h << " " << i;
            ASSERT_NEAR(got[at + 1], im, 2e-5) << t << " " << h << " " << i;
          }
        }
      }
    }
  }
}

struct AttentionCase {
  int n_heads, n_kv_heads, head_size, n_tokens, pos0, context;
};

TEST(CpuOpsTest, AttentionIsCausalWithGqaAndCache) {
  for (CpuLevel level : SupportedLevels()) {
    for (int threads : {1, 3}) {
      std::unique_ptr<CpuBackend> backend = MakeBackend(threads, level);
      ASSERT_NE(backend, nullptr);
      for (const AttentionCase& c :
           {AttentionCase{8, 4, 8, 1, 0, 16}, AttentionCase{8, 4, 8, 7, 5, 16},
            AttentionCase{4, 1, 20, 3, 0, 3}, AttentionCase{6, 6, 64, 1, 40, 64},
            AttentionCase{32, 4, 64, 9, 100, 128}}) {
        SCOPED_TRACE(absl::StrCat(std::string(CpuLevelName(level)), " threads=", threads,
                                  " heads=", c.n_heads, "/", c.n_kv_heads, " hs=", c.head_size,
                                  " n=", c.n_tokens, " pos0=", c.pos0));
        const int q_dim = c.n_heads * c.head_size;
        const int kv_dim = c.n_kv_heads * c.head_size;
        const std::vector<float> q = RandomVector(c.n_tokens * q_dim, 1);
        const std::vector<float> k = RandomVector(c.n_tokens * kv_dim, 2);
        const std::vector<float> v = RandomVector(c.n_tokens * kv_dim, 3);
        // Earlier positions already in the caches.
        const std::vector<float> k_old = RandomVector(c.context * kv_dim, 4);
        const std::vector<float> v_old = RandomVector(c.context * kv_dim, 5);
        auto qb = Upload(*backend, q);
        auto kb = Upload(*backend, k);
        auto vb = Upload(*backend, v);
        auto kc = Upload(*backend, k_old);
        auto vc = Upload(*backend, v_old);
        auto out = backend->Allocate(c.n_tokens * q_dim);
        ASSERT_TRUE(out.ok());
        AttentionShape shape;
        shape.n_tokens = c.n_tokens;
        shape.pos0 = c.pos0;
        shape.n_heads = c.n_heads;
        shape.n_kv_heads = c.n_kv_heads;
        shape.head_size = c.head_size;
        shape.context_length = c.context;
        backend->Attention(**out, *qb, *kb, *vb, *kc, *vc, shape);
        const std::vector<float> got = Download(*backend, **out);
        std::vector<float> keys = Download(*backend, *kc);
        std::vector<float> values = Download(*backend, *vc);
        // The caches: new rows at pos0.., everything else untouched.
        for (int p = 0; p < c.context; ++p) {
          const bool is_new = p >= c.pos0 && p < c.pos0 + c.n_tokens;
          for (int i = 0; i < kv_dim; ++i) {
            const float ek = is_new ? k[(p - c.pos0) * kv_dim + i] : k_old[p * kv_dim + i];
            const float ev = is_new ? v[(p - c.pos0) * kv_dim + i] : v_old[p * kv_dim + i];
            ASSERT_EQ(keys[p * kv_dim + i], ek) << p;
            ASSERT_EQ(values[p * kv_dim + i], ev) << p;
          }
        }
        const int group = c.n_heads / c.n_kv_heads;
        for (int t = 0; t < c.n_tokens; ++t) {
          const int last = c.pos0 + t;
          for (int h = 0; h < c.n_heads; ++h) {
            const int kvh = h / group;
            std::vector<double> s(last + 1);
            double max = -INFINITY;
            for (int p = 0; p <= last; ++p) {
              double dot = 0.0;
              for (int i = 0; i < c.head_size; ++i) {
                dot += static_cast<double>(q[t * q_dim + h * c.head_size + i]) *
                       keys[p * kv_dim + kvh * c.head_size + i];
              }
              s[p] = dot / std::sqrt(static_cast<double>(c.head_size));
              max = std::max(max, s[p]);
            }
            double sum = 0.0;
            for (double& e : s) sum += (e = std::exp(e - max));
            for (int i = 0; i < c.head_size; ++i) {
              double ref = 0.0;
              for (int p = 0; p <= last; ++p) {
                ref += s[p] / sum * values[p * kv_dim + kvh * c.head_size + i];
              }
              ASSERT_NEAR(got[t * q_dim + h * c.head_size + i], ref, 2e-5) << t << " " << h;
            }
          }
        }
      }
    }
  }
}

TEST(CpuOpsTest, SwiGluAddCopy) {
  std::unique_ptr<CpuBackend> backend = MakeBackend(3, BestCpuLevel());
  ASSERT_NE(backend, nullptr);
  for (int64_t count : {int64_t{5}, int64_t{100003}}) {
    const std::vector<float> gate = RandomVector(count + 3, 1, 4.0f);
    const std::vector<float> up = RandomVector(count + 3, 2);
    auto g = Upload(*backend, gate);
    auto u = Upload(*backend, up);
    backend->SwiGlu(*g, *u, count);
    std::vector<float> got = Download(*backend, *g);
    for (int64_t i = 0; i < count + 3; ++i) {
      const double x = gate[i];
      const double ref =
          i < count ? x / (1.0 + std::exp(-x)) * up[i] : x;  // beyond count: untouched
      ASSERT_NEAR(got[i], ref, 1e-6 * std::fabs(ref) + 1e-7) << i;
    }
    backend->Add(*g, *u, count);
    const std::vector<float> sum = Download(*backend, *g);
    for (int64_t i = 0; i < count + 3; ++i) {
      ASSERT_EQ(sum[i], i < count ? got[i] + up[i] : got[i]) << i;
    }
  }
  const std::vector<float> src = RandomVector(100, 3);
  auto s = Upload(*backend, src);
  auto d = Upload(*backend, std::vector<float>(50, 7.0f));
  backend->Copy(*d, 10, *s, 60, 30);
  const std::vector<float> got = Download(*backend, *d);
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(got[i], i >= 10 && i < 40 ? src[50 + i] : 7.0f) << i;
  }
}

// --- Setup ---------------------------------------------------------------------------------

TEST(CpuBackendTest, LoadWeightRejectsBadTensors) {
  std::unique_ptr<CpuBackend> backend = MakeBackend(1, CpuLevel::kGeneric);
  ASSERT_NE(backend, nullptr);
  HostWeight w = MakeWeight(TensorType::kQ4_0, 4, 64, 1);
  EXPECT_TRUE(backend->LoadWeight(w.view).ok());
  TensorView short_view = w.view;
  short_view.bytes -= 1;
  const absl::Status too_short = backend->LoadWeight(short_view).status();
  EXPECT_EQ(too_short.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_short.message().find("test.q4_0"), std::string::npos) << too_short;
  TensorView partial_block = w.view;
  partial_block.shape = {48, 4};
  EXPECT_EQ(backend->LoadWeight(partial_block).status().code(), absl::StatusCode::kInvalidArgument);
  HostWeight g = MakeWeight(TensorType::kQ8Group, 4, 64, 1);
  TensorView no_scales = g.view;
  no_scales.group_scales = nullptr;
  EXPECT_FALSE(backend->LoadWeight(no_scales).ok());
  EXPECT_FALSE(CpuBackend::Create(0, CpuLevel::kGeneric).ok());
}

TEST(CpuBackendTest, LevelFromEnvironment) {
  const char* saved = std::getenv(kCpuLevelEnvVar);
  const std::string saved_value = saved ? saved : "";
  ASSERT_EQ(setenv(kCpuLevelEnvVar, "generic", 1), 0);
  absl::StatusOr<std::unique_ptr<CpuBackend>> backend = CpuBackend::Create(1);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->level(), CpuLevel::kGeneric);
  EXPECT_EQ((*backend)->name(), "cpu-generic-x1");
  ASSERT_EQ(setenv(kCpuLevelEnvVar, "sse9", 1), 0);
  EXPECT_EQ(CpuBackend::Create(1).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(unsetenv(kCpuLevelEnvVar), 0);
  backend = CpuBackend::Create(1);
  ASSERT_TRUE(backend.ok());
  EXPECT_EQ((*backend)->level(), BestCpuLevel());
  if (saved) setenv(kCpuLevelEnvVar, saved_value.c_str(), 1);
}

TEST(ThreadPoolTest, EveryIndexOnceAcrossManyLoops) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> hits(1000);
  for (int round = 0; round < 2000; ++round) {
    const int64_t count = 1 + round % 997;
    pool.ParallelFor(count, 1 + round % 13, [&](int64_t begin, int64_t end, int worker) {
      EXPECT_GE(worker, 0);
      EXPECT_LT(worker, 3);
      for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
    });
    for (int64_t i = 0; i < 1000; ++i) {
      ASSERT_EQ(hits[i].exchange(0), i < count ? 1 : 0) << "round " << round << " i " << i;
    }
    // Now and then let the workers fall asleep, so waking them is exercised too.
    if (round % 500 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

TEST(ThreadPoolTest, AllThreadsTakePart) {
  ThreadPool pool(3);
  std::atomic<int> seen[3] = {};
  std::atomic<int> arrived{0};
  // Every chunk waits until three chunks have started: only possible if three threads run.
  pool.ParallelFor(3, 1, [&](int64_t, int64_t, int worker) {
    seen[worker].fetch_add(1);
    arrived.fetch_add(1);
    while (arrived.load() < 3) std::this_thread::yield();
  });
  EXPECT_EQ(seen[0] + seen[1] + seen[2], 3);
  EXPECT_EQ(seen[0], 1);
  EXPECT_EQ(seen[1], 1);
  EXPECT_EQ(seen[2], 1);
}

}  // namespace
}  // namespace shardrun
