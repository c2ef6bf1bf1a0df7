// How `--plan` shows a plan: one row per worker, then the planner's notes.
#ifndef SHARDRUN_PARTITIONER_PLAN_FORMAT_H_
#define SHARDRUN_PARTITIONER_PLAN_FORMAT_H_

#include <string>

#include "engine/model_slice.h"
#include "partitioner/shard_plan.h"

namespace shardrun {

// A slice in a few characters: "emb+0..3", "4..7+head", "5", "emb+0..4+head", "emb", "head".
std::string SliceLabel(const ModelSlice& slice);

// A table of every worker: id, origin host, stage, layers, weight / KV cache / activation
// bytes, memory use (bytes and percent of the worker's planning memory), threads and backend;
// spares show "-". Then the notes, one per line. Ends with a newline.
std::string FormatPlan(const ShardPlan& plan);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_PLAN_FORMAT_H_
