#include "partitioner/tensor_planner.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "partitioner/byte_size.h"
#include "partitioner/stage_cost.h"

namespace shardrun {
namespace {

// Units per member, in proportion to the capacities; with `at_least_one`, every member first
// gets one unit (when there are enough).
std::vector<int> ProportionalCounts(int units, std::span<const double> capacities,
                                    bool at_least_one) {
  const int n = static_cast<int>(capacities.size());
  std::vector<int> counts(n, 0);
  int left = units;
  if (at_least_one && units >= n) {
    counts.assign(n, 1);
    left -= n;
  }
  const double total = std::accumulate(capacities.begin(), capacities.end(), 0.0);
  std::vector<std::pair<double, int>> remainders;
  int given = 0;
  for (int i = 0; i < n; ++i) {
    const double quota = left * capacities[i] / total;
    const int whole = static_cast<int>(std::floor(quota));
    counts[i] += whole;
    given += whole;
    remainders.push_back({quota - whole, i});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (int k = 0; k < left - given; ++k) counts[remainders[k % n].second]++;
  return counts;
}

std::string Counts(const std::vector<IndexRange>& ranges) {
  std::vector<int> sizes;
  for (const IndexRange& r : ranges) sizes.push_back(r.size());
  return absl::StrJoin(sizes, "/");
}

}  // namespace

std::vector<IndexRange> ProportionalRanges(int total, int unit,
                                           std::span<const double> capacities) {
  const int units = (total + unit - 1) / unit;
  const std::vector<int> counts = ProportionalCounts(units, capacities, false);
  std::vector<IndexRange> ranges;
  int next = 0;
  for (int count : counts) {
    const int begin = std::min(next * unit, total);
    next += count;
    ranges.push_back({begin, std::min(next * unit, total)});
  }
  return ranges;
}

std::vector<TensorSplit> SplitGroup(const ModelShape& shape, std::span<const double> capacities) {
  const std::vector<IndexRange> heads =
      ProportionalRanges(shape.n_kv_heads, shape.kv_head_unit, capacities);
  const std::vector<IndexRange> columns =
      ProportionalRanges(shape.hidden_dim, shape.ffn_column_unit, capacities);
  const std::vector<IndexRange> vocab = ProportionalRanges(shape.vocab_size, 1, capacities);
  std::vector<TensorSplit> splits;
  for (size_t i = 0; i < capacities.size(); ++i) splits.push_back({heads[i], columns[i], vocab[i]});
  return splits;
}

absl::StatusOr<ShardPlan> PlanTensor(const ModelShape& shape, std::span<const WorkerBudget> workers,
                                     const PlanOptions& options) {
  const int n = static_cast<int>(workers.size());
  if (shape.n_experts > 0) {
    return absl::InvalidArgumentError(
        "--type tensor splits dense layers; this is a MoE model: use --type expert (or layer)");
  }
  if (!shape.column_splits) {
    return absl::UnimplementedError(
        "--type tensor cannot cut llama2.c int8 (version 2) matrices by columns; use a GGUF "
        "file or --type layer");
  }
  const int tp = options.tensor_parallel == 0 ? n : options.tensor_parallel;
  if (tp < 1 || n % tp != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tp ", tp, " does not divide ", n,
                     " workers: a tensor plan has stages of --tp workers "
                     "each (e.g. --shards 4 --tp 2 = two stages of two)"));
  }
  const int n_stages = n / tp;
  if (n_stages > shape.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(n_stages, " stages of ", tp,
                                                   " workers but only ", shape.n_layers,
                                                   " layers: use a larger --tp"));
  }

  ShardPlan plan;
  plan.kind = PartitionKind::kTensor;
  plan.context_length = options.context_length > 0 ? options.context_length : shape.context_length;
  plan.max_batch = options.max_batch;
  plan.max_sequences = options.max_sequences;
  plan.workers.assign(workers.begin(), workers.end());
  plan.reduction = tp > 1 ? options.reduction : ReductionPath::kNone;
  const StageCostModel costs(shape, plan.context_length, plan.max_batch, plan.max_sequences);

  std::vector<double> group_capacity(n_stages, 0.0);
  for (int w = 0; w < n; ++w) group_capacity[w / tp] += workers[w].compute_capacity;
  const std::vector<int> layer_counts = ProportionalCounts(shape.n_layers, group_capacity, true);

  std::vector<std::string> short_workers;
  std::vector<std::string> out_of_scope;
  int layer = 0;
  for (int s = 0; s < n_stages; ++s) {
    Stage& stage = plan.stages.emplace_back();
    stage.layers = {layer, layer + layer_counts[s]};
    layer = stage.layers.end;
    std::vector<double> capacities;
    for (int r = 0; r < tp; ++r) capacities.push_back(workers[s * tp + r].compute_capacity);
    const std::vector<TensorSplit> splits = SplitGroup(shape, capacities);
    for (int r = 0; r < tp; ++r) {
      const int w = s * tp + r;
      ShardAssignment a;
      a.worker = w;
      a.stage = s;
      a.rank = r;
      a.slice = {s == 0, stage.layers, s == n_stages - 1, std::nullopt};
      if (tp > 1) a.slice.split = splits[r];
      const StageCost cost = costs.Cost(a.slice);
      a.weight_bytes = cost.weight_bytes;
      a.kv_cache_bytes = cost.kv_cache_bytes;
      a.activation_bytes = cost.activation_bytes;
      if (!ScopeAllowsSlice(workers[w].scope, a.slice, shape.n_experts)) {
        out_of_scope.push_back(absl::StrCat(workers[w].worker_id, " would hold layers ",
                                            stage.layers.begin, "-", stage.layers.end - 1,
                                            " but may hold only ", workers[w].scope.ToString()));
      }
      const int64_t memory = PlanningMemory(workers[w]);
      if (cost.memory_bytes() > memory) {
        short_workers.push_back(absl::StrCat(
            workers[w].worker_id, " needs ", FormatBytes(cost.memory_bytes()), " (weights ",
            FormatBytes(cost.weight_bytes), " + KV cache ", FormatBytes(cost.kv_cache_bytes),
            " + activations ", FormatBytes(cost.activation_bytes), ") but has ",
            FormatBytes(memory), ": short by ", FormatBytes(cost.memory_bytes() - memory)));
      }
      stage.assignments.push_back(static_cast<int>(plan.assignments.size()));
      plan.assignments.push_back(a);
    }
    if (tp > 1) {
      std::vector<IndexRange> heads, columns;
      for (const TensorSplit& t : splits) {
        heads.push_back(t.kv_heads);
        columns.push_back(t.ffn_columns);
      }
      plan.notes.push_back(absl::StrCat(
          "stage ", s, ": ", shape.n_kv_heads, " KV heads split ", Counts(heads),
          shape.kv_head_unit > 1 ? absl::StrCat(" (in groups of ", shape.kv_head_unit,
                                                " to keep quantization blocks whole)")
                                 : "",
          ", ", shape.hidden_dim, " FFN columns split ", Counts(columns),
          shape.ffn_column_unit > 1 ? absl::StrCat(" (in blocks of ", shape.ffn_column_unit, ")")
                                    : ""));
      for (int r = 0; r < tp; ++r) {
        if (splits[r].kv_heads.size() == 0 || splits[r].ffn_columns.size() == 0) {
          plan.notes.push_back(
              absl::StrCat("worker ", workers[s * tp + r].worker_id, " gets no ",
                           splits[r].kv_heads.size() == 0 ? "attention heads" : "FFN columns",
                           ": the model does not divide into ", tp, " parts in whole units"));
        }
      }
    }
  }
  if (!out_of_scope.empty()) {
    // Tensor stages are sized by capacity alone; moving their boundaries to suit token scopes
    // is left to layer and expert plans.
    return absl::FailedPreconditionError(absl::StrCat(
        "the tensor plan does not respect the workers' token scopes: ",
        absl::StrJoin(out_of_scope, "; "), " (use --type layer or expert to place by scope)"));
  }
  if (!short_workers.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("the model does not fit the tensor plan: ",
                                                      absl::StrJoin(short_workers, "; ")));
  }
  if (tp > 1) {
    plan.notes.push_back(absl::StrCat("partial sums reduced ",
                                      std::string(ReductionPathName(plan.reduction)),
                                      ", twice per layer"));
  }
  return plan;
}

}  // namespace shardrun
