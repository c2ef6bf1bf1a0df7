// The search behind layer and pipeline plans: where to cut the model into contiguous stages.
//
// The model is a row of units: the embedding (unit 0), layers 0 .. n-1 (units 1 .. n) and the
// head (unit n+1). A split gives each worker, in order, a contiguous run of units; a worker
// with an empty run is a spare. Dynamic programming over (worker, first unit left) is exact
// and cheap: O(workers x units^2) for each pass.
#ifndef SHARDRUN_PARTITIONER_LAYER_SPLIT_H_
#define SHARDRUN_PARTITIONER_LAYER_SPLIT_H_

#include <optional>
#include <span>
#include <vector>

#include "engine/model_slice.h"
#include "partitioner/shard_plan.h"
#include "partitioner/stage_cost.h"

namespace shardrun {

// Units [begin, end) of each worker, one entry per worker; empty = spare.
using UnitSplit = std::vector<IndexRange>;

// The model slice of units [begin, end) of a model with `n_layers` layers.
ModelSlice SliceOfUnits(IndexRange units, int n_layers);

// A stage's time: the weights it reads per token over its worker's speed.
double StageTime(const StageCost& cost, const WorkerBudget& worker);

// The split whose stages each fit their worker's PlanningMemory (and, with `respect_scopes`,
// its token's scope: ScopeAllowsSlice) and whose slowest stage is fastest; nullopt if no
// split fits. Among equally fast splits (slowest stage within 1% of
// the fastest possible, see kNearTie): the fewest stages (fewer hops), then the smallest sum of
// stage times (the latency of one token when stages run one after another), then the most memory
// headroom (smallest worst fill ratio); then the first found, which is deterministic. Unless
// `allow_bare_ends`, the embedding stays on the stage of layer 0 and the head on the stage of the
// last layer; with it, a stage may hold only the embedding or only the head.
std::optional<UnitSplit> FastestSplit(const StageCostModel& costs,
                                      std::span<const WorkerBudget> workers, bool allow_bare_ends,
                                      bool respect_scopes = true);

// For explaining a model that does not fit: the split (bare ends allowed) whose largest
// overflow (memory needed minus PlanningMemory, over the workers it uses) is smallest.
UnitSplit LeastOverflowSplit(const StageCostModel& costs, std::span<const WorkerBudget> workers);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_LAYER_SPLIT_H_
