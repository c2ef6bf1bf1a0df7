// A fixed set of threads that run one parallel loop at a time, for the CPU backend.
//
// A decode step issues dozens of small parallel loops (one per matrix) back to back, so waking
// sleeping threads for each would cost more than some of the loops. Workers therefore spin on
// a generation counter for a while after each loop and only then sleep on it (a futex through
// std::atomic::wait); the caller runs a share of every loop itself. Dispatching a loop
// allocates nothing.
#ifndef SHARDRUN_KERNELS_CPU_THREAD_POOL_H_
#define SHARDRUN_KERNELS_CPU_THREAD_POOL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace shardrun {

class ThreadPool {
 public:
  // `threads` >= 1 counts the calling thread: threads - 1 workers are started.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }

  // Splits [0, count) into chunks of `grain` items (the last may be shorter) and calls
  // fn(begin, end, worker) for each on every thread, worker 0 being the caller; chunks are
  // handed out in order as threads become free. Returns when all chunks are done. With one
  // thread, or count <= grain, calls fn(0, count, 0) once. Not reentrant: fn must not call
  // back into the pool.
  template <typename Fn>
  void ParallelFor(int64_t count, int64_t grain, Fn&& fn) {
    if (count <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    if (threads_ == 1 || count <= grain) {
      fn(int64_t{0}, count, 0);
      return;
    }
    next_.store(0, std::memory_order_relaxed);
    auto body = [&](int worker) {
      for (;;) {
        const int64_t begin = next_.fetch_add(grain, std::memory_order_relaxed);
        if (begin >= count) break;
        fn(begin, std::min(begin + grain, count), worker);
      }
    };
    Dispatch(&Call<decltype(body)>, &body);
  }

 private:
  template <typename Body>
  static void Call(void* body, int worker) {
    (*static_cast<Body*>(body))(worker);
  }
  // Runs call(ctx, worker) on every thread and waits for all of them.
  void Dispatch(void (*call)(void*, int), void* ctx);
  void WorkerLoop(int worker);
  // Returns the generation once it differs from `seen`: spins first, then sleeps.
  uint32_t AwaitGeneration(uint32_t seen);
  // Joins loop `generation` unless the caller has closed it already.
  bool Join(uint32_t generation);

  static constexpr uint64_t kClosed = uint64_t{1} << 31;
  static constexpr uint64_t kJoinedMask = kClosed - 1;

  const int threads_;
  std::vector<std::thread> workers_;
  // The loop being run; written before generation_ is bumped, read after it changes.
  void (*job_call_)(void*, int) = nullptr;
  void* job_ctx_ = nullptr;
  bool stop_ = false;
  // Each counter on its own cache line: workers hammer them from different cores.
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  alignas(64) std::atomic<int> finished_{0};
  // Who takes part in the current loop: generation << 32 | closed bit | workers joined. The
  // caller waits only for workers that joined before it closed the loop, so a worker the OS
  // has descheduled (another process on the core) does not hold up a loop whose chunks the
  // others already finished; a worker arriving after the close skips that loop.
  alignas(64) std::atomic<uint64_t> roster_{0};
  alignas(64) std::atomic<int64_t> next_{0};
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_THREAD_POOL_H_
