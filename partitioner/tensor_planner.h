// Tensor-parallel plans: each stage's layers computed by a group of workers at once.
//
// The rules, from the sharding issue, and the decisions taken where it left a choice:
// - `tensor_parallel` (--tp) workers per stage; the workers, in order, form the groups. It
//   must divide the number of workers (0 = one stage of all workers); no other combination.
// - Layers go to the stages in proportion to each group's summed capacity (at least one each),
//   the embedding to every member of the first stage, the head to every member of the last.
// - Within a group, in proportion to each member's capacity, every member gets a contiguous
//   range of whole KV heads (with their query heads), of FFN hidden columns and, in the last
//   stage, of vocabulary rows. Cuts keep quantization blocks whole (ModelShape's units); a
//   member may get none of something when the units run out, and a note says so.
// - Every member must fit its PlanningMemory; otherwise a FailedPreconditionError lists each
//   worker's need, memory and shortfall.
// - MoE models (use --type expert) and llama2.c int8 files (columns cannot be cut) are refused.
#ifndef SHARDRUN_PARTITIONER_TENSOR_PLANNER_H_
#define SHARDRUN_PARTITIONER_TENSOR_PLANNER_H_

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "partitioner/model_shape.h"
#include "partitioner/partitioner.h"
#include "partitioner/shard_plan.h"

namespace shardrun {

// `total` things cut into units of `unit` (the last unit may be short), given out as
// contiguous ranges in proportion to `capacities` (largest remainder; ties to the lower rank).
std::vector<IndexRange> ProportionalRanges(int total, int unit, std::span<const double> capacities);

// The tensor splits of one stage's group: member i computes splits[i].
std::vector<TensorSplit> SplitGroup(const ModelShape& shape, std::span<const double> capacities);

// `options.kind` must be kTensor; the inputs must have passed MakePlan's checks.
absl::StatusOr<ShardPlan> PlanTensor(const ModelShape& shape, std::span<const WorkerBudget> workers,
                                     const PlanOptions& options);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_TENSOR_PLANNER_H_
