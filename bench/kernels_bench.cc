// CPU backend matrix products at TinyLlama-1.1B's sizes, in GB/s of weights read.
//
// Two access patterns:
//  - hot: one matrix multiplied again and again; it stays in L2/L3 when it fits, so this
//    measures the kernels' arithmetic.
//  - stream: consecutive matrices out of a working set several times the L3 cache, the way
//    a decode step meets them, so this measures how close the kernels get to memory
//    bandwidth. A whole-model decode (llama.cpp's tokens/s times model size) compares with it.
// Batched products (n > 1 tokens, prefill) and the thread pool's dispatch latency too.
// SHARDRUN_CPU_LEVEL=generic|avx2|avx512 picks the kernels.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/quantize.h"
#include "kernels/tensor_type.h"
#include "model/tensor_view.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

constexpr TensorType kTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16,
                                 TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ8Group};
constexpr int kGroupSize = 64;  // llama2.c export.py's default
// The stream working set: several times the 32 MiB L3 of the machines we run on.
constexpr size_t kStreamBytes = size_t{256} << 20;

// `copies` matrices of one shape in one allocation, filled with realistic values (random
// rows stored in the type, repeated).
struct MatrixSet {
  TensorType type;
  int64_t rows;
  int64_t cols;
  size_t matrix_bytes;  // values only
  int copies;
  std::vector<uint8_t> bytes;
  std::vector<float> scales;  // kQ8Group
  std::vector<TensorView> views;
};

std::unique_ptr<MatrixSet> MakeMatrices(TensorType type, int64_t rows, int64_t cols, int copies) {
  auto set = std::make_unique<MatrixSet>();
  set->type = type;
  set->rows = rows;
  set->cols = cols;
  const size_t row_bytes = TensorBytes(type, cols);
  set->matrix_bytes = row_bytes * rows;
  set->copies = copies;
  set->bytes.resize(set->matrix_bytes * copies);
  constexpr int kPatternRows = 61;
  std::vector<uint8_t> pattern(row_bytes * kPatternRows);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> row(cols);
  for (int r = 0; r < kPatternRows; ++r) {
    for (float& x : row) x = dist(rng);
    if (type == TensorType::kQ8Group) {
      for (int64_t c = 0; c < cols; ++c) {
        pattern[r * row_bytes + c] = static_cast<uint8_t>(static_cast<int8_t>(row[c] * 3000.0f));
      }
    } else {
      QuantizeRow(type, row, pattern.data() + r * row_bytes);
    }
  }
  for (size_t off = 0; off < set->bytes.size(); off += pattern.size()) {
    std::memcpy(set->bytes.data() + off, pattern.data(),
                std::min(pattern.size(), set->bytes.size() - off));
  }
  const int64_t groups = rows * cols / kGroupSize;
  if (type == TensorType::kQ8Group) set->scales.assign(groups * copies, 0.02f / 127.0f);
  for (int i = 0; i < copies; ++i) {
    TensorView v;
    v.name = "bench";
    v.type = type;
    v.shape = {cols, rows};
    v.data = set->bytes.data() + i * set->matrix_bytes;
    v.bytes = set->matrix_bytes;
    if (type == TensorType::kQ8Group) {
      v.group_scales = set->scales.data() + i * groups;
      v.group_size = kGroupSize;
    }
    set->views.push_back(v);
  }
  return set;
}

// args: type index, rows, cols, threads, stream (0/1), tokens.
void BM_MatMul(benchmark::State& state) {
  const TensorType type = kTypes[state.range(0)];
  const int64_t rows = state.range(1);
  const int64_t cols = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const bool stream = state.range(4) != 0;
  const int n = static_cast<int>(state.range(5));
  auto backend = CpuBackend::Create(threads);
  if (!backend.ok()) {
    state.SkipWithError(backend.status().ToString().c_str());
    return;
  }
  const size_t matrix_bytes = TensorBytes(type, cols) * rows;
  const int copies =
      stream
          ? static_cast<int>(std::max<size_t>(1, (kStreamBytes + matrix_bytes - 1) / matrix_bytes))
          : 1;
  const std::unique_ptr<MatrixSet> set = MakeMatrices(type, rows, cols, copies);
  std::vector<std::unique_ptr<DeviceWeight>> weights;
  for (const TensorView& v : set->views) {
    auto w = (*backend)->LoadWeight(v);
    if (!w.ok()) {
      state.SkipWithError(w.status().ToString().c_str());
      return;
    }
    weights.push_back(*std::move(w));
  }
  std::vector<float> x(n * cols);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  auto in = (*backend)->Allocate(n * cols);
  auto out = (*backend)->Allocate(n * rows);
  (*backend)->Write(**in, 0, x);
  size_t i = 0;
  for (auto _ : state) {
    (*backend)->MatMul(**out, *weights[i % weights.size()], **in, n);
    ++i;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * matrix_bytes));
  if (n > 1) state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * n);
  state.SetLabel((*backend)->name());
}

// One empty parallel loop: what a matrix product pays to involve the other threads.
void BM_PoolDispatch(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  for (auto _ : state) {
    pool.ParallelFor(threads, 1, [](int64_t, int64_t, int) {});
  }
}

void RegisterAll() {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {2048, 2048}, {5632, 2048}, {32000, 2048}};
  for (int stream : {0, 1}) {
    for (size_t t = 0; t < std::size(kTypes); ++t) {
      for (const auto& [rows, cols] : shapes) {
        for (int threads : {1, 2}) {
          const std::string name = std::string("MatMul/") + (stream ? "stream/" : "hot/") +
                                   std::string(TensorTypeName(kTypes[t])) + "/" +
                                   std::to_string(rows) + "x" + std::to_string(cols) +
                                   "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(name.c_str(), BM_MatMul)
              ->Args({static_cast<int64_t>(t), rows, cols, threads, stream, 1})
              ->UseRealTime()
              ->Unit(benchmark::kMicrosecond);
        }
      }
    }
  }
  // Prefill: 32 tokens through one 2048 x 2048 matrix.
  for (size_t t = 0; t < std::size(kTypes); ++t) {
    for (int threads : {1, 2}) {
      const std::string name = std::string("MatMulBatch32/") +
                               std::string(TensorTypeName(kTypes[t])) +
                               "/2048x2048/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), BM_MatMul)
          ->Args({static_cast<int64_t>(t), 2048, 2048, threads, 0, 32})
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::RegisterBenchmark("PoolDispatch", BM_PoolDispatch)->Arg(1)->Arg(2)->UseRealTime();
}

}  // namespace
}  // namespace shardrun

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  shardrun::RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
