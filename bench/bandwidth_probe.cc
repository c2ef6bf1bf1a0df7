// The read-bandwidth ceiling of a decode step: how fast `threads` threads can stream a buffer
// much larger than the caches, allocated and shared out the way the CPU backend holds and
// reads its weights (AlignedStorage, so huge pages where the kernel allows them; the backend's
// ThreadPool handing out chunks in order).
//
//   bandwidth_probe [--threads 1,2] [--mib 1024] [--repeat 10] [--tsv]
//
// Prints the best and the median GB/s (1e9 bytes/s) of `--repeat` passes per thread count.
// A decode step cannot read its weights faster than the best figure; the share of it that
// the engine reaches is what bench/compare_llamacpp.py reports.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/time/clock.h"
#include "kernels/cpu/aligned_storage.h"
#include "kernels/cpu/thread_pool.h"

namespace shardrun {
namespace {

// Eight independent sums so that the loop is bound by loads, not by one add chain; the
// compiler vectorizes it with whatever the build targets (SSE2 is plenty: 30 GB/s is about
// one 16-byte load per 2 cycles).
uint64_t SumWords(const uint64_t* p, int64_t words) {
  uint64_t s[8] = {};
  for (int64_t i = 0; i + 8 <= words; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += p[i + k];
  }
  uint64_t total = 0;
  for (uint64_t v : s) total += v;
  return total;
}

struct Rates {
  double best = 0;
  double median = 0;
};

Rates Measure(const uint64_t* data, int64_t words, int threads, int repeat) {
  ThreadPool pool(threads);
  // Chunks of 1 MiB handed out in order, like the rows of a matrix product.
  constexpr int64_t kChunkWords = (int64_t{1} << 20) / sizeof(uint64_t);
  std::vector<double> rates;
  std::vector<uint64_t> sinks(static_cast<size_t>(threads) * 8);
  for (int r = 0; r <= repeat; ++r) {  // pass 0 warms up the pool and the TLB
    const absl::Time t0 = absl::Now();
    pool.ParallelFor(words, kChunkWords, [&](int64_t begin, int64_t end, int worker) {
      sinks[static_cast<size_t>(worker) * 8] += SumWords(data + begin, end - begin);
    });
    const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    if (r > 0) rates.push_back(static_cast<double>(words * sizeof(uint64_t)) / seconds / 1e9);
  }
  uint64_t sink = 0;
  for (uint64_t v : sinks) sink += v;
  if (sink == 1) std::fprintf(stderr, " ");  // keeps the sums alive
  std::sort(rates.begin(), rates.end());
  return Rates{rates.back(), rates[rates.size() / 2]};
}

}  // namespace
}  // namespace shardrun

int main(int argc, char** argv) {
  using namespace shardrun;
  CLI::App app{"Read bandwidth of a buffer larger than the caches"};
  std::vector<int> threads = {1, 2};
  int mib = 1024, repeat = 10;
  bool tsv = false;
  app.add_option("--threads", threads, "Thread counts")->delimiter(',');
  app.add_option("--mib", mib, "Buffer size in MiB")->check(CLI::Range(64, 1 << 16));
  app.add_option("--repeat", repeat, "Measured passes")->check(CLI::PositiveNumber);
  app.add_flag("--tsv", tsv, "Tab-separated rows: threads, best GB/s, median GB/s");
  CLI11_PARSE(app, argc, argv);

  const int64_t words = (int64_t{mib} << 20) / static_cast<int64_t>(sizeof(uint64_t));
  AlignedStorage storage;
  auto* data = storage.Reserve<uint64_t>(static_cast<size_t>(words));
  if (data == nullptr) {
    std::fprintf(stderr, "out of memory for %d MiB\n", mib);
    return 1;
  }
  for (int64_t i = 0; i < words; ++i) data[i] = static_cast<uint64_t>(i);
  if (!tsv) {
    std::printf("| threads | read GB/s best | read GB/s median |\n|---|---|---|\n");
  }
  for (int t : threads) {
    if (t < 1) continue;
    const Rates r = Measure(data, words, t, repeat);
    if (tsv) {
      std::printf("%d\t%.2f\t%.2f\n", t, r.best, r.median);
    } else {
      std::printf("| %d | %.1f | %.1f |\n", t, r.best, r.median);
    }
    std::fflush(stdout);
  }
  return 0;
}
