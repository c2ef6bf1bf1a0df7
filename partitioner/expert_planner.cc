#include "partitioner/expert_planner.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "partitioner/byte_size.h"
#include "partitioner/layer_planner.h"
#include "partitioner/stage_cost.h"

namespace shardrun {
namespace {

// The model as the layer owners see it: every layer without its experts.
ModelShape WithoutExperts(const ModelShape& shape) {
  ModelShape dense = shape;
  for (int l = 0; l < shape.n_layers; ++l) {
    dense.layer_bytes[l] -= int64_t{shape.n_experts} * shape.expert_bytes[l];
    dense.expert_bytes[l] = 0;
  }
  dense.n_experts = 0;
  dense.n_experts_used = 0;
  return dense;
}

// Buffers an expert-only worker allocates to run one row (ExpertBank).
int64_t ExpertActivationBytes(const ModelShape& shape) {
  return int64_t{4} * (2 * shape.dim + 2 * shape.hidden_dim);
}

struct Candidate {
  int layer, expert;
  double load;
};

}  // namespace

absl::StatusOr<ShardPlan> PlanExperts(const ModelShape& shape,
                                      std::span<const WorkerBudget> workers,
                                      const PlanOptions& options) {
  if (shape.n_experts == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--type expert needs a mixture-of-experts model; ",
        shape.name.empty() ? "this one" : shape.name, " is dense: use --type layer or tensor"));
  }
  const bool calibrated = !options.expert_load.empty();
  if (calibrated && static_cast<int>(options.expert_load.size()) != shape.n_layers) {
    return absl::InvalidArgumentError("expert load must have one row per layer");
  }
  const ModelShape dense = WithoutExperts(shape);
  PlanOptions layer_options = options;
  layer_options.kind = PartitionKind::kLayer;
  auto layer_plan = PlanLayers(dense, workers, layer_options);
  if (!layer_plan.ok()) return layer_plan.status();
  ShardPlan plan = *std::move(layer_plan);
  plan.kind = PartitionKind::kExpert;
  const int n = static_cast<int>(workers.size());

  // Each worker's assignment (layer owners have one; the others get an expert-only one).
  std::vector<int> assignment_of(n, -1);
  for (size_t a = 0; a < plan.assignments.size(); ++a) {
    plan.assignments[a].slice.experts = false;
    assignment_of[plan.assignments[a].worker] = static_cast<int>(a);
  }
  std::vector<int> owner(shape.n_layers, -1);
  for (const ShardAssignment& a : plan.assignments) {
    for (int l = a.slice.layers.begin; l < a.slice.layers.end; ++l) owner[l] = a.worker;
  }
  std::vector<int64_t> free(n);
  for (int w = 0; w < n; ++w) {
    free[w] = PlanningMemory(workers[w]) -
              (assignment_of[w] >= 0 ? plan.BytesFor(w) : ExpertActivationBytes(shape));
  }

  std::vector<Candidate> experts;
  double total_load = 0;
  for (int l = 0; l < shape.n_layers; ++l) {
    for (int e = 0; e < shape.n_experts; ++e) {
      double load = 1.0;
      if (calibrated) {
        const std::vector<double>& row = options.expert_load[l];
        load = e < static_cast<int>(row.size()) ? row[e] : 0.0;
      }
      experts.push_back({l, e, load});
      total_load += load;
    }
  }
  const double mean_load = total_load / static_cast<double>(experts.size());
  std::stable_sort(experts.begin(), experts.end(),
                   [](const Candidate& a, const Candidate& b) { return a.load > b.load; });

  std::vector<double> work(n, 0.0);  // expected expert calls per unit of capacity
  std::vector<std::vector<ExpertRef>> held(n);
  std::vector<int64_t> bytes(n, 0);
  // The worker to place `c` on (excluding `not_on`), or -1 when none has room.
  auto pick = [&](const Candidate& c, double load, int not_on) {
    const int64_t need = shape.expert_bytes[c.layer];
    int best = -1;
    double best_work = 0;
    for (int w = 0; w < n; ++w) {
      if (w == not_on || free[w] < need || !workers[w].scope.AllowsExpert(c.layer, c.expert)) {
        continue;
      }
      const double after = work[w] + load / workers[w].compute_capacity;
      const bool better =
          best < 0 || after < best_work - 1e-12 ||
          (after <= best_work + 1e-12 && w == owner[c.layer] && best != owner[c.layer]);
      if (better) {
        best = w;
        best_work = after;
      }
    }
    return best;
  };
  auto place = [&](const Candidate& c, int w, double load) {
    free[w] -= shape.expert_bytes[c.layer];
    bytes[w] += shape.expert_bytes[c.layer];
    work[w] += load / workers[w].compute_capacity;
    held[w].push_back({c.layer, c.expert});
  };
  int replicas = 0;
  for (const Candidate& c : experts) {
    const bool hot = calibrated && c.load > 2.0 * mean_load;
    const int first = pick(c, hot ? c.load / 2 : c.load, -1);
    if (first < 0) {
      std::vector<std::string> room, scoped;
      for (int w = 0; w < n; ++w) {
        room.push_back(
            absl::StrCat(workers[w].worker_id, " ", FormatBytes(std::max<int64_t>(0, free[w]))));
        if (!workers[w].scope.AllowsExpert(c.layer, c.expert)) {
          scoped.push_back(
              absl::StrCat(workers[w].worker_id, " may hold only ", workers[w].scope.ToString()));
        }
      }
      if (!scoped.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("expert ", c.expert, " of layer ", c.layer,
                         " has no place: no worker whose token "
                         "scope includes it has ",
                         FormatBytes(shape.expert_bytes[c.layer]), " left (",
                         absl::StrJoin(scoped, "; "), "; free: ", absl::StrJoin(room, ", "), ")"));
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "the experts do not fit: expert ", c.expert, " of layer ", c.layer, " needs ",
          FormatBytes(shape.expert_bytes[c.layer]), " but no worker has that left after the ",
          "layers and the experts placed before it (free: ", absl::StrJoin(room, ", "),
          "); all experts need ",
          FormatBytes(shape.n_experts * std::accumulate(shape.expert_bytes.begin(),
                                                        shape.expert_bytes.end(), int64_t{0}))));
    }
    if (!hot) {
      place(c, first, c.load);
      continue;
    }
    place(c, first, c.load / 2);
    const int second = pick(c, c.load / 2, first);
    if (second >= 0) {
      place(c, second, c.load / 2);
      ++replicas;
      plan.notes.push_back(absl::StrFormat(
          "expert %d of layer %d is hot (%.1fx the mean load): replicated on %s and %s", c.expert,
          c.layer, c.load / mean_load, workers[first].worker_id, workers[second].worker_id));
    } else {
      work[first] += c.load / 2 / workers[first].compute_capacity;
    }
  }

  for (int w = 0; w < n; ++w) {
    if (held[w].empty()) continue;
    std::sort(held[w].begin(), held[w].end(), [](const ExpertRef& a, const ExpertRef& b) {
      return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
    });
    if (assignment_of[w] < 0) {
      ShardAssignment a;
      a.worker = w;
      a.stage = -1;  // holds experts only
      a.slice = {false, {0, 0}, false};
      a.slice.experts = false;
      a.activation_bytes = ExpertActivationBytes(shape);
      assignment_of[w] = static_cast<int>(plan.assignments.size());
      plan.assignments.push_back(a);
      // It is no spare after all.
      std::erase_if(plan.notes, [&](const std::string& note) {
        return note.starts_with(absl::StrCat("worker ", workers[w].worker_id, " gets no layers"));
      });
    }
    ShardAssignment& a = plan.assignments[assignment_of[w]];
    a.experts = std::move(held[w]);
    a.weight_bytes += bytes[w];
  }
  std::vector<std::string> shares;
  const double total_work = std::accumulate(work.begin(), work.end(), 0.0);
  for (int w = 0; w < n; ++w) {
    shares.push_back(absl::StrFormat("%s %.0f%%", workers[w].worker_id,
                                     total_work > 0 ? 100.0 * work[w] / total_work : 0.0));
  }
  plan.notes.push_back(absl::StrCat(
      shape.n_layers * shape.n_experts, " experts placed by ",
      calibrated ? "the router load measured on the calibration prompt" : "count (no --calibrate)",
      replicas > 0 ? absl::StrCat(", ", replicas, " replicated") : "",
      "; expected share of expert work (per unit of capacity): ", absl::StrJoin(shares, ", ")));
  return plan;
}

}  // namespace shardrun
