#include "partitioner/layer_planner.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "partitioner/byte_size.h"
#include "partitioner/layer_split.h"
#include "partitioner/plan_format.h"
#include "partitioner/shortfall.h"
#include "partitioner/stage_cost.h"

namespace shardrun {
namespace {

// Why worker `w` got nothing.
std::string SpareNote(const ShardPlan& plan, const StageCostModel& costs, int w) {
  const int n = costs.shape().n_layers;
  int64_t smallest_layer = std::numeric_limits<int64_t>::max();
  for (int layer = 0; layer < n; ++layer) {
    smallest_layer =
        std::min(smallest_layer, costs.Cost({false, {layer, layer + 1}, false}).memory_bytes());
  }
  const WorkerBudget& worker = plan.workers[w];
  std::string why;
  if (PlanningMemory(worker) < smallest_layer) {
    why = absl::StrCat("its memory (", FormatBytes(PlanningMemory(worker)),
                       ") cannot hold one layer with its KV cache and activations (",
                       FormatBytes(smallest_layer), ")");
  } else if (n < static_cast<int>(plan.workers.size())) {
    why = absl::StrCat(n, " layers over ", plan.workers.size(), " workers");
  } else {
    why = "another stage would not make the slowest stage faster, only add a hop";
  }
  return absl::StrCat("worker ", worker.worker_id, " gets no layers (spare): ", why);
}

void AddNotes(ShardPlan& plan, const StageCostModel& costs, bool bare_ends) {
  const ModelShape& shape = costs.shape();
  for (int w = 0; w < static_cast<int>(plan.workers.size()); ++w) {
    const bool assigned = std::any_of(plan.assignments.begin(), plan.assignments.end(),
                                      [w](const ShardAssignment& a) { return a.worker == w; });
    if (!assigned) plan.notes.push_back(SpareNote(plan, costs, w));
  }
  const ShardAssignment* slowest = nullptr;
  double slowest_time = -1;
  for (const ShardAssignment& a : plan.assignments) {
    const WorkerBudget& worker = plan.workers[a.worker];
    const std::string& id = worker.worker_id;
    if (bare_ends && a.slice.layers.size() == 0) {
      plan.notes.push_back(absl::StrCat(
          "worker ", id, " holds only the ", a.slice.embedding ? "embedding" : "output head",
          ": no plan with it beside the ", a.slice.embedding ? "first" : "last",
          " layer fits in memory"));
    }
    if (a.slice.head && !a.slice.embedding && shape.tied_output) {
      plan.notes.push_back(absl::StrCat("the output head shares the embedding table: worker ", id,
                                        " holds its own copy (", FormatBytes(shape.output_bytes),
                                        ")"));
    }
    if (worker.backend == BackendKind::kVulkan) {
      plan.notes.push_back(
          worker.gpu_memory_bytes > 0
              ? absl::StrCat("worker ", id,
                             " computes with Vulkan: planned against its GPU memory (",
                             FormatBytes(worker.gpu_memory_bytes), ")")
              : absl::StrCat("worker ", id,
                             " computes with Vulkan but reported no GPU memory: planned against "
                             "its host memory"));
    }
    const double time = StageTime(costs.Cost(a.slice), worker);
    if (time > slowest_time) {
      slowest_time = time;
      slowest = &a;
    }
  }
  if (plan.stages.size() > 1 && slowest != nullptr) {
    const WorkerBudget& worker = plan.workers[slowest->worker];
    plan.notes.push_back(absl::StrFormat(
        "slowest stage: %d on worker %s (%s), %s of weights per token at compute capacity %g",
        slowest->stage, worker.worker_id, SliceLabel(slowest->slice),
        FormatBytes(costs.Cost(slowest->slice).compute_bytes), worker.compute_capacity));
  }
  if (plan.kind == PartitionKind::kPipeline) {
    std::string note =
        absl::StrCat("pipeline: every worker reserves KV caches for ", plan.max_sequences,
                     " sequence", plan.max_sequences == 1 ? "" : "s", " in flight");
    if (plan.max_sequences < static_cast<int>(plan.stages.size())) {
      absl::StrAppend(&note, "; fewer than the ", plan.stages.size(),
                      " stages, so some stages wait");
    }
    plan.notes.push_back(note);
  }
}

// No split fits: when one would without the workers' token scopes, the scopes are the reason.
absl::Status ScopeOrShortfallError(const StageCostModel& costs,
                                   std::span<const WorkerBudget> workers) {
  std::vector<std::string> scoped;
  for (const WorkerBudget& w : workers) {
    if (!w.scope.whole_model()) {
      scoped.push_back(absl::StrCat(w.worker_id, " may hold only ", w.scope.ToString()));
    }
  }
  const bool fits_without_scopes =
      !scoped.empty() &&
      FastestSplit(costs, workers, /*allow_bare_ends=*/true, /*respect_scopes=*/false).has_value();
  if (!fits_without_scopes) return ShortfallError(costs, workers);
  return absl::FailedPreconditionError(absl::StrCat(
      "no plan places every layer inside the workers' token scopes (", absl::StrJoin(scoped, "; "),
      "): stages follow the workers' order, and each must hold a "
      "contiguous range of layers its worker may hold"));
}

}  // namespace

absl::StatusOr<ShardPlan> PlanLayers(const ModelShape& shape, std::span<const WorkerBudget> workers,
                                     const PlanOptions& options) {
  const int context = options.context_length > 0 ? options.context_length : shape.context_length;
  const StageCostModel costs(shape, context, options.max_batch, options.max_sequences);
  bool bare_ends = false;
  std::optional<UnitSplit> split = FastestSplit(costs, workers, /*allow_bare_ends=*/false);
  if (!split.has_value()) {
    bare_ends = true;
    split = FastestSplit(costs, workers, /*allow_bare_ends=*/true);
  }
  if (!split.has_value()) return ScopeOrShortfallError(costs, workers);

  ShardPlan plan;
  plan.kind = options.kind;
  plan.context_length = context;
  plan.max_batch = options.max_batch;
  plan.max_sequences = options.max_sequences;
  plan.workers.assign(workers.begin(), workers.end());
  for (int w = 0; w < static_cast<int>(workers.size()); ++w) {
    if ((*split)[w].size() == 0) continue;
    ShardAssignment a;
    a.worker = w;
    a.stage = static_cast<int>(plan.stages.size());
    a.slice = SliceOfUnits((*split)[w], shape.n_layers);
    const StageCost cost = costs.Cost(a.slice);
    a.weight_bytes = cost.weight_bytes;
    a.kv_cache_bytes = cost.kv_cache_bytes;
    a.activation_bytes = cost.activation_bytes;
    plan.stages.push_back({a.slice.layers, {static_cast<int>(plan.assignments.size())}});
    plan.assignments.push_back(std::move(a));
  }
  AddNotes(plan, costs, bare_ends);
  return plan;
}

}  // namespace shardrun
