#include "partitioner/layer_split.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

namespace shardrun {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
// Stage times within this relative distance count as equal, so that sums of the same byte
// counts in a different order do not decide a tie.
constexpr double kTimeTolerance = 1e-9;
// Splits whose slowest stage is within 1% of the fastest possible count as equally fast, so
// that the tie-breaks (fewer hops first) decide between them: a 1% difference is below what
// the cost model resolves (it ignores attention over the cache and per-call overheads), while
// a hop has a real cost. Without it, the one embedding row a token reads would be enough to
// prefer an extra stage.
constexpr double kNearTie = 0.01;

bool Less(double a, double b) {
  return a < b - kTimeTolerance * std::max(std::abs(a), std::abs(b));
}

// Where stages may begin and end: unit indices, ascending, from 0 to n_layers + 2.
std::vector<int> CutPoints(int n_layers, bool allow_bare_ends) {
  std::vector<int> cuts = {0};
  if (allow_bare_ends) cuts.push_back(1);  // after the embedding
  for (int c = 2; c <= n_layers; ++c) cuts.push_back(c);
  if (allow_bare_ends) cuts.push_back(n_layers + 1);  // before the head
  cuts.push_back(n_layers + 2);
  return cuts;
}

// Costs of every stage [cuts[i], cuts[j]) and whether it fits each worker.
class StageTable {
 public:
  StageTable(const StageCostModel& costs, std::span<const WorkerBudget> workers,
             std::vector<int> cuts, bool respect_scopes)
      : workers_(workers), cuts_(std::move(cuts)), n_(cuts_.size()) {
    const int n_layers = costs.shape().n_layers;
    costs_.resize(n_ * n_);
    for (size_t i = 0; i < n_; ++i) {
      for (size_t j = i + 1; j < n_; ++j) {
        costs_[i * n_ + j] = costs.Cost(SliceOfUnits({cuts_[i], cuts_[j]}, n_layers));
      }
    }
    // allowed_[w][i * n_ + j]: whether worker w's token lets it hold stage [i, j).
    allowed_.assign(workers.size(), std::vector<bool>(n_ * n_, true));
    for (size_t w = 0; respect_scopes && w < workers.size(); ++w) {
      if (workers[w].scope.whole_model()) continue;
      for (size_t i = 0; i < n_; ++i) {
        for (size_t j = i + 1; j < n_; ++j) {
          allowed_[w][i * n_ + j] =
              ScopeAllowsSlice(workers[w].scope, SliceOfUnits({cuts_[i], cuts_[j]}, n_layers),
                               costs.shape().n_experts);
        }
      }
    }
  }

  size_t size() const { return n_; }
  const StageCost& cost(size_t i, size_t j) const { return costs_[i * n_ + j]; }
  int64_t overflow(size_t w, size_t i, size_t j) const {
    return cost(i, j).memory_bytes() - PlanningMemory(workers_[w]);
  }
  // Within the worker's memory and its token's scope. Both only get harder as the range
  // grows, so callers may stop at the first range that does not fit.
  bool fits(size_t w, size_t i, size_t j) const {
    return overflow(w, i, j) <= 0 && allowed_[w][i * n_ + j];
  }
  double time(size_t w, size_t i, size_t j) const { return StageTime(cost(i, j), workers_[w]); }
  double fill(size_t w, size_t i, size_t j) const {
    const int64_t memory = PlanningMemory(workers_[w]);
    return memory > 0 ? static_cast<double>(cost(i, j).memory_bytes()) / memory : kInfinity;
  }

  // Follows next[w][i] (the cut index where worker w's stage ends; i itself = spare).
  UnitSplit Trace(const std::vector<std::vector<size_t>>& next) const {
    UnitSplit split(workers_.size());
    size_t i = 0;
    for (size_t w = 0; w < workers_.size(); ++w) {
      const size_t j = next[w][i];
      split[w] = {cuts_[i], cuts_[j]};
      i = j;
    }
    return split;
  }

 private:
  std::span<const WorkerBudget> workers_;
  std::vector<int> cuts_;
  size_t n_;
  std::vector<StageCost> costs_;  // [i * n_ + j], j > i
  std::vector<std::vector<bool>> allowed_;
};

// The fastest possible slowest stage over all splits that fit, or infinity.
double FastestBottleneck(const StageTable& table, size_t n_workers) {
  const size_t n = table.size(), last = n - 1;
  // best[w][i]: the fastest slowest stage placing units cuts[i].. on workers w..
  std::vector<std::vector<double>> best(n_workers + 1, std::vector<double>(n, kInfinity));
  best[n_workers][last] = 0;
  for (size_t w = n_workers; w-- > 0;) {
    best[w][last] = 0;
    for (size_t i = 0; i < last; ++i) {
      double b = best[w + 1][i];  // w is a spare
      // Memory grows with the range, so the first range that does not fit ends the search.
      for (size_t j = i + 1; j < n && table.fits(w, i, j); ++j) {
        if (best[w + 1][j] < kInfinity)
          b = std::min(b, std::max(table.time(w, i, j), best[w + 1][j]));
      }
      best[w][i] = b;
    }
  }
  return best[0][0];
}

// How a split ranks once its slowest stage is fixed; smaller is better, in this order.
struct Rank {
  int stages = 0;
  double total_time = 0;
  double worst_fill = 0;
  bool valid = false;

  bool BetterThan(const Rank& other) const {
    if (!other.valid) return valid;
    if (!valid) return false;
    if (stages != other.stages) return stages < other.stages;
    if (Less(total_time, other.total_time)) return true;
    if (Less(other.total_time, total_time)) return false;
    return worst_fill < other.worst_fill;
  }
};

}  // namespace

ModelSlice SliceOfUnits(IndexRange units, int n_layers) {
  ModelSlice slice;
  slice.embedding = units.begin == 0 && units.end > 0;
  slice.head = units.end == n_layers + 2 && units.begin < n_layers + 2;
  slice.layers.begin = std::clamp(units.begin - 1, 0, n_layers);
  slice.layers.end = std::clamp(units.end - 1, slice.layers.begin, n_layers);
  return slice;
}

double StageTime(const StageCost& cost, const WorkerBudget& worker) {
  return static_cast<double>(cost.compute_bytes) / worker.compute_capacity;
}

std::optional<UnitSplit> FastestSplit(const StageCostModel& costs,
                                      std::span<const WorkerBudget> workers, bool allow_bare_ends,
                                      bool respect_scopes) {
  const StageTable table(costs, workers, CutPoints(costs.shape().n_layers, allow_bare_ends),
                         respect_scopes);
  const size_t n_workers = workers.size(), n = table.size(), last = n - 1;
  const double bottleneck = FastestBottleneck(table, n_workers);
  if (bottleneck == kInfinity) return std::nullopt;
  const double limit = bottleneck * (1 + kNearTie);

  // Second pass: among splits whose every stage is within `limit`, the best Rank.
  std::vector<std::vector<Rank>> rank(n_workers + 1, std::vector<Rank>(n));
  std::vector<std::vector<size_t>> next(n_workers + 1, std::vector<size_t>(n));
  rank[n_workers][last] = {0, 0, 0, true};
  for (size_t w = n_workers; w-- > 0;) {
    for (size_t i = 0; i < n; ++i) {
      Rank r;
      size_t end = i;
      for (size_t j = i + 1; j < n && table.fits(w, i, j); ++j) {
        const Rank& rest = rank[w + 1][j];
        const double time = table.time(w, i, j);
        if (!rest.valid || time > limit) continue;
        const Rank candidate = {rest.stages + 1, rest.total_time + time,
                                std::max(rest.worst_fill, table.fill(w, i, j)), true};
        if (candidate.BetterThan(r)) {
          r = candidate;
          end = j;
        }
      }
      // Checked last, so that at a tie the spares are the last workers.
      if (rank[w + 1][i].BetterThan(r)) {
        r = rank[w + 1][i];
        end = i;
      }
      rank[w][i] = r;
      next[w][i] = end;
    }
  }
  return table.Trace(next);
}

UnitSplit LeastOverflowSplit(const StageCostModel& costs, std::span<const WorkerBudget> workers) {
  const StageTable table(costs, workers, CutPoints(costs.shape().n_layers, true),
                         /*respect_scopes=*/false);
  const size_t n_workers = workers.size(), n = table.size(), last = n - 1;
  constexpr int64_t kImpossible = std::numeric_limits<int64_t>::max();
  constexpr int64_t kNoStage = std::numeric_limits<int64_t>::min();
  // worst[w][i]: the smallest largest overflow placing units cuts[i].. on workers w..
  std::vector<std::vector<int64_t>> worst(n_workers + 1, std::vector<int64_t>(n, kImpossible));
  std::vector<std::vector<size_t>> next(n_workers + 1, std::vector<size_t>(n));
  worst[n_workers][last] = kNoStage;
  for (size_t w = n_workers; w-- > 0;) {
    for (size_t i = 0; i < n; ++i) {
      int64_t best = kImpossible;
      size_t end = i;
      for (size_t j = i + 1; j < n; ++j) {
        if (worst[w + 1][j] == kImpossible) continue;
        const int64_t candidate = std::max(table.overflow(w, i, j), worst[w + 1][j]);
        if (candidate < best) {
          best = candidate;
          end = j;
        }
      }
      if (worst[w + 1][i] < best) {  // w is a spare
        best = worst[w + 1][i];
        end = i;
      }
      worst[w][i] = best;
      next[w][i] = end;
    }
  }
  return table.Trace(next);
}

}  // namespace shardrun
