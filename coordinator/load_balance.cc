// Load balancing between tokens: when one stage of a layer or pipeline plan is persistently
// slower than the plan expected (another process steals its CPU, a slower machine), the
// coordinator measures each worker's real speed, re-plans with it, and moves the layer
// boundaries — only when the new plan is predicted to be clearly faster (hysteresis), and at
// most once per window of decode steps, so it does not oscillate. "Faster" is what the mode
// waits for: the sum of the stage times for one sequence at a time (layer), the slowest stage
// for a full pipeline.
#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "coordinator/coordinator.h"
#include "partitioner/plan_format.h"
#include "partitioner/stage_cost.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// Decode steps between two looks at the stage times.
constexpr int64_t kWindow = 16;
// A new plan must cut the slowest stage's time by this much to be worth reloading for.
constexpr double kMinGain = 0.25;
// ...and the slowest stage must have taken this many times the fastest one's time, in two
// windows running: stages of a balanced plan differ by noise (and small models by tens of
// microseconds), which is no reason to move anything.
constexpr double kMinImbalance = 2.0;

}  // namespace

absl::Status Coordinator::MaybeRebalance() {
  if (!options_.rebalance || !pending_.empty() || recovering_) return absl::OkStatus();
  if (plan_.kind != PartitionKind::kLayer && plan_.kind != PartitionKind::kPipeline) {
    return absl::OkStatus();
  }
  if (plan_.stages.size() < 2) return absl::OkStatus();
  // Mean decode compute time of each stage over the window.
  // Called before every step: nothing is allocated until a whole window has passed.
  for (size_t s = 0; s < plan_.stages.size(); ++s) {
    if (stage_times_[s].decode_steps - balance_mark_[s].first < kWindow) return absl::OkStatus();
  }
  std::vector<double> time_us(plan_.stages.size(), 0.0);
  for (size_t s = 0; s < plan_.stages.size(); ++s) {
    const StageTimes& t = stage_times_[s];
    const int64_t steps = t.decode_steps - balance_mark_[s].first;
    time_us[s] = static_cast<double>(t.decode_compute_us - balance_mark_[s].second) / steps;
  }
  for (size_t s = 0; s < plan_.stages.size(); ++s) {
    balance_mark_[s] = {stage_times_[s].decode_steps, stage_times_[s].decode_compute_us};
  }
  // Each worker's measured speed: the bytes its stage reads per token over its time.
  const ModelShape shape = ShapeOf(model_);
  const StageCostModel costs(shape, plan_.context_length, plan_.max_batch, plan_.max_sequences);
  const bool pipelined = plan_.kind == PartitionKind::kPipeline;
  auto token_time = [&](const std::vector<double>& stage_us) {
    return pipelined ? *std::max_element(stage_us.begin(), stage_us.end())
                     : std::accumulate(stage_us.begin(), stage_us.end(), 0.0);
  };
  const double now_us = token_time(time_us);
  const double slowest_now = *std::max_element(time_us.begin(), time_us.end());
  const double fastest_now = *std::min_element(time_us.begin(), time_us.end());
  imbalanced_windows_ = slowest_now > kMinImbalance * fastest_now ? imbalanced_windows_ + 1 : 0;
  if (imbalanced_windows_ < 2) return absl::OkStatus();
  std::map<std::string, double> speed;
  for (size_t s = 0; s < plan_.stages.size(); ++s) {
    const ShardAssignment& a = plan_.assignments[plan_.stages[s].assignments[0]];
    speed[plan_.workers[a.worker].worker_id] =
        static_cast<double>(costs.Cost(a.slice).compute_bytes) / std::max(1.0, time_us[s]);
  }
  std::map<std::string, double> saved = measured_speed_;
  for (const auto& [id, v] : speed) measured_speed_[id] = v;
  auto plan = Plan();
  if (!plan.ok()) {
    measured_speed_ = saved;
    return absl::OkStatus();
  }
  // The new plan's stage times at the measured speeds.
  std::vector<double> new_us;
  for (const Stage& stage : plan->stages) {
    const ShardAssignment& a = plan->assignments[stage.assignments[0]];
    const std::string& id = plan->workers[a.worker].worker_id;
    const double v = measured_speed_.contains(id) ? measured_speed_[id] : 0.0;
    if (v <= 0) {
      measured_speed_ = saved;
      return absl::OkStatus();
    }
    new_us.push_back(static_cast<double>(costs.Cost(a.slice).compute_bytes) / v);
  }
  const double predicted_us = token_time(new_us);
  if (predicted_us > (1.0 - kMinGain) * now_us) {
    measured_speed_ = saved;  // not worth a reload: keep the plan (and the old estimates)
    return absl::OkStatus();
  }
  std::vector<std::string> before, after;
  for (size_t s = 0; s < plan_.stages.size(); ++s) {
    const ShardAssignment& a = plan_.assignments[plan_.stages[s].assignments[0]];
    before.push_back(absl::StrCat(plan_.workers[a.worker].worker_id, " ", SliceLabel(a.slice), " ",
                                  static_cast<int64_t>(time_us[s]), " us"));
  }
  for (const Stage& stage : plan->stages) {
    const ShardAssignment& a = plan->assignments[stage.assignments[0]];
    after.push_back(absl::StrCat(plan->workers[a.worker].worker_id, " ", SliceLabel(a.slice)));
  }
  spdlog::warn(
      "rebalancing: stage times {} ({:.0f} us/token); new split {} (predicted {:.0f} "
      "us/token)",
      absl::StrJoin(before, ", "), now_us, absl::StrJoin(after, ", "), predicted_us);
  ++rebalances_;
  absl::Status s = Deploy(*plan);
  for (auto it = history_.begin(); s.ok() && it != history_.end(); ++it) {
    s = Replay(it->first, static_cast<int>(it->second.size()));
  }
  if (!s.ok()) return Recover(std::string(s.message()), LostWorkers());
  balance_mark_.assign(plan_.stages.size(), {0, 0});
  stage_times_.assign(plan_.stages.size(), StageTimes{});
  return absl::OkStatus();
}

}  // namespace shardrun
