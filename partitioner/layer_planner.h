// Layer and pipeline plans: the model cut into contiguous stages, one worker each.
//
// The rules, from the sharding issue, and the decisions taken where it left a choice:
// - Stages follow the workers' order; each holds a contiguous layer range. The embedding goes
//   with the first stage, the final norm and output head with the last.
// - Every stage must fit its worker's PlanningMemory: weights, `max_sequences` KV caches of
//   `context_length` positions (KvCache::BytesFor), activation buffers (ActivationBytes).
// - Objective: the slowest stage is as fast as possible, a stage's time being the weights it
//   reads per token over its worker's compute_capacity. That bounds pipeline throughput and
//   sizes stages in proportion to the workers' speeds. Ties (within 1%) go to fewer stages (fewer
//   hops), then to the smaller sum of stage times, then to more memory headroom (see
//   FastestSplit).
// - A worker may get nothing: it is a spare, and a note says why (fewer layers than workers,
//   too little memory, or another stage would not make the slowest one faster).
// - A stage holding only the embedding or only the head is used only when no plan with them
//   beside the first / last layer fits; a note says so.
// - A worker's stage lies inside its token's scope (WorkerBudget::scope): its layers, and for
//   a MoE model all their experts. A stage outside it is infeasible, like one that does not
//   fit in memory.
// - No split fits: FailedPreconditionError from ShortfallError, or naming the scopes when
//   they are what stands in the way.
#ifndef SHARDRUN_PARTITIONER_LAYER_PLANNER_H_
#define SHARDRUN_PARTITIONER_LAYER_PLANNER_H_

#include <span>

#include "absl/status/statusor.h"
#include "partitioner/model_shape.h"
#include "partitioner/partitioner.h"
#include "partitioner/shard_plan.h"

namespace shardrun {

// `options.kind` must be kLayer or kPipeline; the inputs must have passed MakePlan's checks.
absl::StatusOr<ShardPlan> PlanLayers(const ModelShape& shape, std::span<const WorkerBudget> workers,
                                     const PlanOptions& options);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_LAYER_PLANNER_H_
