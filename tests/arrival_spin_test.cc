// The spin window of proto/arrival_spin.h: where it opens and closes around a steady stream,
// and that an irregular, slow or blocking stream is always awaited asleep.
#include "proto/arrival_spin.h"

#include <chrono>

#include "gtest/gtest.h"

namespace shardrun {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kLongest(50);

TEST(ArrivalSpinTest, SpinsAroundTheNextArrivalOfASteadyStream) {
  ArrivalSpin spin(PollMode::kSpin);
  // Every 24 ms (a 4-stage decode step of TinyLlama on 2 vCPUs).
  for (int64_t t = 0; t <= 4 * 24'000; t += 24'000) spin.Arrived(t);
  const int64_t last = 4 * 24'000;
  // Just after an arrival: sleep until the window opens (24 - 3 ms lead), in whole ms.
  EXPECT_EQ(spin.SleepFor(last + 100, kLongest), milliseconds(20));
  // Capped by the caller's longest sleep.
  EXPECT_EQ(spin.SleepFor(last + 100, milliseconds(5)), milliseconds(5));
  // Inside the window: before, at and after the due time.
  EXPECT_EQ(spin.SleepFor(last + 21'000, kLongest), milliseconds(0));
  EXPECT_EQ(spin.SleepFor(last + 24'000, kLongest), milliseconds(0));
  EXPECT_EQ(spin.SleepFor(last + 29'000, kLongest), milliseconds(0));
  // A quarter period late the rhythm is broken: asleep again.
  EXPECT_EQ(spin.SleepFor(last + 30'001, kLongest), kLongest);
}

TEST(ArrivalSpinTest, OneSlowStepDoesNotMoveThePrediction) {
  ArrivalSpin spin(PollMode::kSpin);
  int64_t t = 0;
  for (int i = 0; i < 4; ++i) spin.Arrived(t += 10'000);
  spin.Arrived(t += 400'000);                                      // a pause between prompts
  EXPECT_EQ(spin.SleepFor(t + 8'500, kLongest), milliseconds(0));  // still a 10 ms rhythm
}

TEST(ArrivalSpinTest, NeedsThreeIntervalsBeforeSpinning) {
  ArrivalSpin spin(PollMode::kSpin);
  spin.Arrived(0);
  spin.Arrived(10'000);
  spin.Arrived(20'000);
  EXPECT_EQ(spin.SleepFor(29'500, kLongest), kLongest);
  spin.Arrived(30'000);
  EXPECT_EQ(spin.SleepFor(39'500, kLongest), milliseconds(0));
}

TEST(ArrivalSpinTest, SlowStreamsAndBlockModeNeverSpin) {
  ArrivalSpin slow(PollMode::kSpin);
  for (int64_t t = 0; t <= 2'000'000; t += 500'000) slow.Arrived(t);
  EXPECT_EQ(slow.SleepFor(2'000'000 + 499'000, kLongest), kLongest);

  ArrivalSpin blocking(PollMode::kBlock);
  EXPECT_FALSE(blocking.enabled());
  for (int64_t t = 0; t <= 100'000; t += 10'000) blocking.Arrived(t);
  EXPECT_EQ(blocking.SleepFor(109'500, kLongest), kLongest);
}

TEST(ArrivalSpinTest, ParsesAndResolvesModes) {
  EXPECT_EQ(*ParsePollMode("spin"), PollMode::kSpin);
  EXPECT_EQ(*ParsePollMode("block"), PollMode::kBlock);
  EXPECT_EQ(*ParsePollMode("auto"), PollMode::kAuto);
  EXPECT_FALSE(ParsePollMode("busy").ok());
  EXPECT_EQ(ResolvePollMode(PollMode::kSpin, 1 << 20), PollMode::kSpin);
  EXPECT_EQ(ResolvePollMode(PollMode::kBlock, 0), PollMode::kBlock);
  // No host has a core beyond a million threads; every host has one beyond zero.
  EXPECT_EQ(ResolvePollMode(PollMode::kAuto, 1 << 20), PollMode::kBlock);
  EXPECT_EQ(ResolvePollMode(PollMode::kAuto, 0), PollMode::kSpin);
}

}  // namespace
}  // namespace shardrun
