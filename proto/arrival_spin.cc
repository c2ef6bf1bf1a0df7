#include "proto/arrival_spin.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace shardrun {
namespace {

// Streams slower than this are not worth a spinning core.
constexpr int64_t kSteadiestUs = 200'000;
// poll() sleeps in whole milliseconds and wakes up to a timer slack late: the window opens at
// least this long before the predicted arrival.
constexpr int64_t kMinLeadUs = 1'500;
// After the predicted arrival the loop keeps spinning this long (or a quarter period) before it
// concludes the rhythm broke and sleeps.
constexpr int64_t kMinLateUs = 2'000;

}  // namespace

absl::StatusOr<PollMode> ParsePollMode(const std::string& text) {
  if (text == "block") return PollMode::kBlock;
  if (text == "spin") return PollMode::kSpin;
  if (text == "auto") return PollMode::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("--poll takes block, spin or auto, not '", text, "'"));
}

PollMode ResolvePollMode(PollMode mode, int compute_threads) {
  if (mode != PollMode::kAuto) return mode;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return cores > compute_threads ? PollMode::kSpin : PollMode::kBlock;
}

void ArrivalSpin::Arrived(int64_t now_us) {
  if (!enabled_) return;
  if (last_us_ >= 0 && now_us > last_us_) {
    intervals_us_[next_] = now_us - last_us_;
    next_ = (next_ + 1) % static_cast<int>(intervals_us_.size());
    count_ = std::min(count_ + 1, static_cast<int>(intervals_us_.size()));
  }
  last_us_ = now_us;
}

int64_t ArrivalSpin::PeriodUs() const {
  // Five numbers at most: an insertion sort (std::sort of a prefix trips gcc's -Warray-bounds).
  std::array<int64_t, 5> sorted{};
  for (int i = 0; i < count_; ++i) {
    int j = i;
    for (; j > 0 && sorted[j - 1] > intervals_us_[i]; --j) sorted[j] = sorted[j - 1];
    sorted[j] = intervals_us_[i];
  }
  return sorted[count_ / 2];
}

std::chrono::milliseconds ArrivalSpin::SleepFor(int64_t now_us,
                                                std::chrono::milliseconds longest) const {
  if (!enabled_ || count_ < 3) return longest;
  const int64_t period = PeriodUs();
  if (period > kSteadiestUs) return longest;
  const int64_t due = last_us_ + period;
  const int64_t opens = due - std::max(kMinLeadUs, period / 8);
  const int64_t closes = due + std::max(kMinLateUs, period / 4);
  if (now_us >= closes) return longest;  // the rhythm broke: wait asleep for the next message
  if (now_us >= opens) return std::chrono::milliseconds(0);
  const auto until_open = std::chrono::milliseconds((opens - now_us) / 1000);
  return std::min(longest, until_open);
}

}  // namespace shardrun
