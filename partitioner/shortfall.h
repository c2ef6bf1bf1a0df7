// Why a model does not fit: the error a layer or pipeline plan returns when no split fits.
#ifndef SHARDRUN_PARTITIONER_SHORTFALL_H_
#define SHARDRUN_PARTITIONER_SHORTFALL_H_

#include <span>

#include "absl/status/status.h"
#include "partitioner/shard_plan.h"
#include "partitioner/stage_cost.h"

namespace shardrun {

// A FailedPreconditionError that says, in this order: what the model needs at least (weights,
// KV cache, activations) against what the workers offer in total (each worker's memory) and
// the shortfall, or that the total would do; any layer (or the embedding, or the head) that
// alone is larger than the largest worker; and the split that overflows least, with each
// worker's need, memory and overflow. For when FastestSplit found nothing.
absl::Status ShortfallError(const StageCostModel& costs, std::span<const WorkerBudget> workers);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_SHORTFALL_H_
