// The most recent latency samples of a run (microseconds), kept in a buffer sized once: the
// per-step bookkeeping neither allocates on the token path nor grows with a long generation.
#ifndef SHARDRUN_COORDINATOR_LATENCY_WINDOW_H_
#define SHARDRUN_COORDINATOR_LATENCY_WINDOW_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace shardrun {

class LatencyWindow {
 public:
  static constexpr size_t kCapacity = 4096;  // the last 4096 steps

  void Add(int64_t us) {
    if (samples_.size() < kCapacity) {
      if (samples_.capacity() < kCapacity) samples_.reserve(kCapacity);  // once, at the start
      samples_.push_back(us);
      return;
    }
    samples_[next_] = us;
    next_ = (next_ + 1) % kCapacity;
  }

  // The samples held, sorted (a copy: for reports, off the token path).
  std::vector<int64_t> Sorted() const {
    std::vector<int64_t> sorted = samples_;
    std::sort(sorted.begin(), sorted.end());
    return sorted;
  }

 private:
  std::vector<int64_t> samples_;
  size_t next_ = 0;  // the oldest sample, once the window is full
};

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_LATENCY_WINDOW_H_
