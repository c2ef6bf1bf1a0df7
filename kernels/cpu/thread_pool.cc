#include "kernels/cpu/thread_pool.h"

#include <chrono>

namespace shardrun {
namespace {

// How long an idle worker spins before sleeping. Longer than the gap between the matrices of
// one token (norms, rope, attention), short enough not to burn a core while the engine idles.
constexpr auto kSpinTime = std::chrono::microseconds(1000);
// How many polls the caller makes for workers to finish before it starts yielding its core
// between polls (which only matters when other threads compete for the cores).
constexpr int kCallerSpins = 1 << 10;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(std::max(threads, 1)) {
  workers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  if (workers_.empty()) return;
  stop_ = true;
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Dispatch(void (*call)(void*, int), void* ctx) {
  job_call_ = call;
  job_ctx_ = ctx;
  finished_.store(0, std::memory_order_relaxed);
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  roster_.store(static_cast<uint64_t>(generation) << 32, std::memory_order_seq_cst);
  // seq_cst on both sides (here and in AwaitGeneration) guarantees that either we see the
  // sleeper or the sleeper sees the new generation before it blocks.
  generation_.store(generation, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
  call(ctx, 0);
  // Every chunk is claimed: close the loop and wait for the workers that joined it.
  const uint64_t roster = roster_.fetch_or(kClosed, std::memory_order_acq_rel);
  const int joined = static_cast<int>(roster & kJoinedMask);
  for (int polls = 0; finished_.load(std::memory_order_acquire) != joined; ++polls) {
    if (polls < kCallerSpins) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

uint32_t ThreadPool::AwaitGeneration(uint32_t seen) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      const uint32_t g = generation_.load(std::memory_order_acquire);
      if (g != seen) return g;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    // Let any other runnable thread have the core. Alone on its core this costs a syscall
    // every few hundred nanoseconds of spinning; sharing one (more threads than cores, or the
    // scheduler placing the caller beside this worker, which it does on a busy machine where
    // each session's threads share one scheduling group) the spinning would keep the thread
    // everyone waits for off its core. Measured on a 2-core VM beside other builds, a 2-thread
    // pool whose threads the scheduler put on one core: 269 -> 200 us per loop of 8 chunks
    // of 23 us.
    std::this_thread::yield();
  }
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  uint32_t g;
  while ((g = generation_.load(std::memory_order_seq_cst)) == seen) {
    generation_.wait(seen, std::memory_order_seq_cst);
  }
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
  return g;
}

bool ThreadPool::Join(uint32_t generation) {
  uint64_t roster = roster_.load(std::memory_order_acquire);
  for (;;) {
    if ((roster >> 32) != generation || (roster & kClosed) != 0) return false;
    if (roster_.compare_exchange_weak(roster, roster + 1, std::memory_order_acq_rel)) return true;
  }
}

void ThreadPool::WorkerLoop(int worker) {
  uint32_t seen = 0;
  for (;;) {
    seen = AwaitGeneration(seen);
    if (stop_) return;
    if (!Join(seen)) continue;  // that loop is over already
    job_call_(job_ctx_, worker);
    finished_.fetch_add(1, std::memory_order_release);
  }
}

}  // namespace shardrun
