// The coordinator's failure recovery: declare the lost workers dead, re-plan over whoever is
// left (a spare first, or a worker that joins), reload, rebuild every live sequence's KV caches
// by replaying its tokens, and resubmit the steps that were in flight. The generation loop
// above sees only a slower step: no token is lost or repeated.
#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "coordinator/coordinator.h"
#include "partitioner/plan_format.h"
#include "spdlog/spdlog.h"

namespace shardrun {

std::vector<std::string> Coordinator::LostWorkers() const {
  std::vector<std::string> lost;
  for (const std::string& id : PlanWorkerIds()) {
    auto it = workers_.find(id);
    if (it == workers_.end() || replaced_.contains(id) || drained_.contains(id)) {
      lost.push_back(id);
      continue;
    }
    const absl::Time now = absl::Now();
    if (Unreachable(it->second, now) || now - it->second.last_heard > options_.worker_timeout) {
      lost.push_back(id);
    }
  }
  return lost;
}

bool Coordinator::Unreachable(const WorkerInfo& worker, absl::Time now) const {
  return worker.unreachable_since != absl::InfinitePast() &&
         now - worker.unreachable_since > absl::Milliseconds(200) &&
         now - worker.last_heard > options_.heartbeat_interval;
}

absl::Status Coordinator::WaitForStep(uint64_t sequence) {
  const absl::Time deadline = absl::Now() + options_.step_timeout;
  while (true) {
    if (!pending_.contains(sequence)) {
      // Its logits arrived: take back the completion it queued (the last one of this sequence:
      // an earlier one may be a completed step the caller has not collected yet).
      auto it = std::find(completed_.rbegin(), completed_.rend(), sequence);
      if (it != completed_.rend()) completed_.erase(std::next(it).base());
      return absl::OkStatus();
    }
    if (!worker_error_.empty()) {
      const std::string error = std::move(worker_error_);
      worker_error_.clear();
      return absl::UnavailableError(error);
    }
    if (std::vector<std::string> lost = LostWorkers(); !lost.empty()) {
      return absl::UnavailableError(absl::StrCat("lost worker(s) ", absl::StrJoin(lost, ", ")));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("no logits within ", absl::FormatDuration(options_.step_timeout)));
    }
    Pump(absl::Milliseconds(100));
  }
}

absl::Status Coordinator::Replay(uint64_t sequence, int end) {
  std::vector<float> discard(static_cast<size_t>(model_.config().vocab_size));
  for (int pos = 0; pos < end; pos += options_.max_batch) {
    PendingStep& step = pending_[sequence];
    step = PendingStep{next_step_++, discard, std::min(options_.max_batch, end - pos),
                       absl::Now(),  0,       pos};
    SendStep(sequence, step);
    if (absl::Status s = WaitForStep(sequence); !s.ok()) {
      pending_.erase(sequence);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Recover(const std::string& why, const std::vector<std::string>& lost) {
  recovering_ = true;
  ++recoveries_;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + options_.recovery_timeout;
  spdlog::warn("recovering: {}", why);
  // The steps in flight start again once the caches are rebuilt (in sequence order).
  std::map<uint64_t, PendingStep> in_flight(pending_.begin(), pending_.end());
  pending_.clear();
  std::vector<std::string> dead = lost;
  std::string problem = why;
  absl::Time last_report = absl::InfinitePast();
  absl::Status result;
  while (true) {
    for (const std::string& id : dead) {
      if (replaced_.erase(id) > 0) {
        // Its new process is registered already and may take a shard again.
        spdlog::warn("worker {} lost its shard when it restarted", id);
        continue;
      }
      if (drained_.erase(id) > 0) {
        // Its permission token expired or was revoked: no backoff, it simply needs a new one.
        workers_.erase(id);
        streamer_.Cancel(id);
        spdlog::warn("worker {} drained (permission token no longer valid)", id);
        continue;
      }
      if (workers_.erase(id) == 0 && failures_.contains(id)) continue;
      streamer_.Cancel(id);
      Failures& f = failures_[id];
      ++f.count;
      // A flapping worker waits 1 s, 2 s, 4 s ... (at most a minute) before it may rejoin.
      f.refused_until =
          absl::Now() + std::min(absl::Seconds(60), absl::Seconds(std::pow(2.0, f.count - 1)));
      spdlog::warn("worker {} declared dead", id);
    }
    auto plan = Plan();
    if (plan.ok()) {
      absl::Status s = Deploy(*plan);
      for (auto it = history_.begin(); s.ok() && it != history_.end(); ++it) {
        auto flight = in_flight.find(it->first);
        const int end =
            flight != in_flight.end() ? flight->second.pos0 : static_cast<int>(it->second.size());
        s = Replay(it->first, end);
      }
      if (s.ok()) {
        for (auto& [sequence, step] : in_flight) {
          step.step = next_step_++;
          step.submitted = absl::Now();
          step.parts_received = 0;
          pending_[sequence] = step;
          SendStep(sequence, pending_[sequence]);
        }
        spdlog::warn("recovered in {:.0f} ms on {} worker(s); {} sequence(s) replayed",
                     absl::ToDoubleMilliseconds(absl::Now() - start), plan->workers.size(),
                     history_.size());
        spdlog::info("new plan:\n{}", FormatPlan(*plan));
        break;
      }
      problem = std::string(s.message());
      spdlog::warn("recovery attempt failed: {}", problem);
    } else {
      problem = std::string(plan.status().message());
    }
    if (absl::Now() > deadline) {
      result =
          absl::UnavailableError(absl::StrCat("cannot recover from (", why, "): ", problem,
                                              "; no worker that could hold the lost "
                                              "shard joined within ",
                                              absl::FormatDuration(options_.recovery_timeout)));
      break;
    }
    // A deploy that failed (a worker found gone meanwhile) says so above and simply retries; a
    // plan that cannot be made waits for a worker able to hold the lost shard.
    if (!plan.ok() && absl::Now() - last_report > absl::Seconds(5)) {
      spdlog::warn("waiting for a worker to join ({} left): {}",
                   absl::FormatDuration(absl::Trunc(deadline - absl::Now(), absl::Seconds(1))),
                   problem);
      last_report = absl::Now();
    }
    Pump(absl::Milliseconds(100));
    dead = LostWorkers();
  }
  recovering_ = false;
  return result;
}

}  // namespace shardrun
