// Expert plans (--type expert): a MoE model's layers on stage owners, its experts spread over
// every worker.
//
// The rules, from the sharding issue, and the decisions taken where it left a choice:
// - Attention, norms and routers stay with each layer's owner: the layer plan (layer_planner.h)
//   of the model without its experts decides the stages. Workers it leaves spare hold experts
//   only.
// - Each expert goes, hottest first, to the worker whose expected expert work per unit of
//   capacity stays lowest, among those with memory left; ties go to the layer's owner (its
//   calls then need no hop), then to the lower index. Expected work is the router's share
//   measured on a calibration prompt (`expert_load`), or equal for every expert without one.
// - With a calibration, an expert expected to take more than twice the mean is replicated on
//   the least-busy other worker that has room; calls alternate between the copies.
// - Token scopes (WorkerBudget::scope): layer owners hold only layers their scope allows (the
//   layer plan sees to it), and workers whose scope excludes an expert are skipped for it.
// - An expert that fits nowhere: FailedPreconditionError naming it, its size and each worker's
//   free memory (and the scopes, when they exclude it). A dense model: InvalidArgumentError.
#ifndef SHARDRUN_PARTITIONER_EXPERT_PLANNER_H_
#define SHARDRUN_PARTITIONER_EXPERT_PLANNER_H_

#include <span>

#include "absl/status/statusor.h"
#include "partitioner/model_shape.h"
#include "partitioner/partitioner.h"
#include "partitioner/shard_plan.h"

namespace shardrun {

// `options.kind` must be kExpert; the inputs must have passed MakePlan's checks.
absl::StatusOr<ShardPlan> PlanExperts(const ModelShape& shape,
                                      std::span<const WorkerBudget> workers,
                                      const PlanOptions& options);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_EXPERT_PLANNER_H_
