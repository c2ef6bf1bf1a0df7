// The partitioner's entry point: model shape + worker budgets + strategy -> plan.
//
// Pure planning: no I/O, no logging; the same inputs always give the same plan.
#ifndef SHARDRUN_PARTITIONER_PARTITIONER_H_
#define SHARDRUN_PARTITIONER_PARTITIONER_H_

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "partitioner/model_shape.h"
#include "partitioner/shard_plan.h"

namespace shardrun {

struct PlanOptions {
  PartitionKind kind = PartitionKind::kLayer;
  // KV cache positions every stage reserves; 0 = the model's context length. More than the
  // model's is an error.
  int context_length = 0;
  // Tokens per forward call (batched prefill): sizes the activation buffers.
  int max_batch = 1;
  // KV caches each worker keeps: sequences in flight at once (pipeline mode; 1 for a plain
  // layer plan serving one sequence).
  int max_sequences = 1;
  // kTensor: workers per stage (0 = all of them in one stage), and how they add partial sums.
  int tensor_parallel = 0;
  ReductionPath reduction = ReductionPath::kAllToAll;
  // kExpert: calls each expert took on a calibration prompt, [layer][expert]; empty = equal.
  std::vector<std::vector<double>> expert_load;
};

// Plans `shape` over `workers` (in the order given, which becomes the stage order).
// kLayer / kPipeline: see layer_planner.h; kTensor: tensor_planner.h; kExpert: expert_planner.h.
// InvalidArgumentError for unusable inputs (no workers, duplicate ids, a non-positive
// capacity, ...); FailedPreconditionError, with the shortfall per worker, when the model
// does not fit.
absl::StatusOr<ShardPlan> MakePlan(const ModelShape& shape, std::span<const WorkerBudget> workers,
                                   const PlanOptions& options);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_PARTITIONER_H_
