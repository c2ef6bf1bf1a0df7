// When to spin instead of sleeping while a steady stream of messages is awaited.
//
// A decode step reaches each stage once per token, at a rhythm the stage can predict. Waking a
// thread that sleeps in zmq_poll costs tens of microseconds per wake on a virtual machine (the
// vCPU halts; the hop then pays for the ZeroMQ I/O thread and the application thread both),
// which is more than the whole hop should take. So a receive loop may sleep until shortly
// before the next message is due, then poll without blocking (yielding the core between polls)
// until it comes or a window passes, and sleep again.
//
// Measured (bench/README.md, 2 vCPUs): it takes the application thread's wake out of a hop
// (bench/hop_bench: 4-process ring, 150-200 -> 120-160 us p50 after memory-bound steps; 130 ->
// 65-77 us in cache; the ZeroMQ I/O threads' wakes remain) and, with 4 TinyLlama layer shards
// of one thread each, cuts transport per token from ~1.5 to ~1.0 ms (decode +2-9%); with 2
// threads each on 2 vCPUs it takes a core from the arithmetic and loses. Hence kAuto, spinning
// only where a core is spare, is the default.
//
// Spinning costs a core for the window only (about an eighth of the period), and only when the
// stream is steady: an irregular or slow stream (> 200 ms apart) is always awaited asleep.
#ifndef SHARDRUN_PROTO_ARRIVAL_SPIN_H_
#define SHARDRUN_PROTO_ARRIVAL_SPIN_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace shardrun {

enum class PollMode {
  kBlock,  // always sleep in poll
  kSpin,   // spin around the predicted arrival
  kAuto,   // spin when the host has a core to spare for it (see ResolvePollMode)
};

absl::StatusOr<PollMode> ParsePollMode(const std::string& text);

// kAuto becomes kSpin when this host has more cores than `compute_threads` (the spinning loop
// then does not take a core from the arithmetic), else kBlock.
PollMode ResolvePollMode(PollMode mode, int compute_threads);

class ArrivalSpin {
 public:
  explicit ArrivalSpin(PollMode mode) : enabled_(mode == PollMode::kSpin) {}

  bool enabled() const { return enabled_; }

  // Records that an awaited message arrived at `now_us` (microseconds, any fixed origin).
  void Arrived(int64_t now_us);

  // How long a loop that waits for the next message may sleep in poll at `now_us`, at most
  // `longest`: zero inside the spin window (poll without blocking, then std::this_thread::yield).
  std::chrono::milliseconds SleepFor(int64_t now_us, std::chrono::milliseconds longest) const;

 private:
  // The median of the last few intervals: one slow token (a prefill, a pause) does not move it.
  int64_t PeriodUs() const;

  bool enabled_;
  int64_t last_us_ = -1;
  std::array<int64_t, 5> intervals_us_{};
  int count_ = 0;  // intervals recorded (saturates at intervals_us_.size())
  int next_ = 0;   // where the next interval goes
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_ARRIVAL_SPIN_H_
