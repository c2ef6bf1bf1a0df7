// A partition of one model over workers: the data the partitioner produces, the coordinator
// sends to workers, and `--plan` prints.
//
// One schema carries all four partition kinds:
// - kLayer:    stages run one after another, each a contiguous LayerRange on one worker.
// - kPipeline: the layer plan, with several sequences in flight so every stage works at once.
// - kTensor:   each stage's layers are split across several workers by whole KV-head groups
//              and FFN column ranges, with two reductions per layer (`reduction`).
// - kExpert:   attention, norms and routers stay with each stage's owner; MoE experts are
//              placed on expert workers (`experts` of the assignments).
#ifndef SHARDRUN_PARTITIONER_SHARD_PLAN_H_
#define SHARDRUN_PARTITIONER_SHARD_PLAN_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/scope.h"
#include "engine/model_slice.h"

namespace shardrun {

enum class PartitionKind { kLayer, kPipeline, kTensor, kExpert };
std::string_view PartitionKindName(PartitionKind kind);  // "layer", "pipeline", ...
std::optional<PartitionKind> PartitionKindFromName(std::string_view name);

enum class BackendKind { kCpu, kVulkan };
std::string_view BackendKindName(BackendKind kind);

// What a worker declares when it registers.
struct WorkerBudget {
  std::string worker_id;         // unique within the cluster
  std::string host;              // origin host, for display
  int64_t memory_bytes = 0;      // for weights + KV cache + activations (host memory)
  int64_t gpu_memory_bytes = 0;  // BackendKind::kVulkan only
  int threads = 1;
  BackendKind backend = BackendKind::kCpu;
  // Relative speed used to size shards (e.g. threads x SIMD width factor, or a measurement).
  // Only ratios between workers matter.
  double compute_capacity = 1.0;
  // What the worker may hold: its permission token's scope (default: the whole model). The
  // planners place its layers and experts only inside it.
  auth::ShardScope scope;
};

// Whether `scope` lets a worker hold `slice` of a model with `n_experts` experts per layer:
// the slice's layer bodies and, when the slice holds its layers' experts (slice.experts on a
// MoE model), every one of them. The embedding and the head follow no scope.
bool ScopeAllowsSlice(const auth::ShardScope& scope, const ModelSlice& slice, int n_experts);

// One MoE expert of one layer.
struct ExpertRef {
  int layer = 0;
  int expert = 0;
};

// What one worker holds and computes.
struct ShardAssignment {
  int worker = 0;  // index into ShardPlan::workers
  int stage = 0;   // index into ShardPlan::stages
  // Embedding / layer range / head this worker runs; for kTensor also its `split` (the KV
  // heads, FFN columns and vocabulary rows it computes of every layer of its stage).
  ModelSlice slice;
  int rank = 0;  // kTensor: this worker's place in its stage's group (the order of the sums)
  // kExpert: experts this worker holds (an expert worker has an empty `slice.layers`).
  std::vector<ExpertRef> experts;
  int64_t weight_bytes = 0;
  int64_t kv_cache_bytes = 0;
  int64_t activation_bytes = 0;
};

// How the partial sums of a tensor-parallel stage are combined. Every path adds the members'
// partials in rank order, so all members hold bit-identical sums.
// - kAllToAll: each member sends its partial to every other member and adds all of them
//   itself: one hop per reduction, (g-1) sends per member.
// - kGatherBroadcast: members send to rank 0, which adds and sends the sum back: two hops,
//   2(g-1) messages in all, all through one worker.
// (A ring needs 2(g-1) hops per reduction; with a dim-sized vector the hops, not the bytes,
// dominate, so it would be the slowest here: see bench/README.md.)
enum class ReductionPath { kNone, kAllToAll, kGatherBroadcast };
std::string_view ReductionPathName(ReductionPath path);  // "none", "all-to-all", "gather-broadcast"
std::optional<ReductionPath> ReductionPathFromName(std::string_view name);

// A group of workers that together run one contiguous layer range.
struct Stage {
  LayerRange layers;
  std::vector<int> assignments;  // indices into ShardPlan::assignments; > 1 only for kTensor
};

struct ShardPlan {
  PartitionKind kind = PartitionKind::kLayer;
  int context_length = 0;  // KV cache positions each worker reserves
  int max_batch = 0;       // tokens per forward call the activation buffers are sized for
  int max_sequences = 0;   // KV caches each worker reserves (sequences in flight at once)
  std::vector<WorkerBudget> workers;  // as registered, in plan order
  std::vector<ShardAssignment> assignments;
  std::vector<Stage> stages;  // in forward order
  ReductionPath reduction = ReductionPath::kNone;
  // Human-readable decisions the partitioner made that a user should know about
  // ("worker w3 gets no layers: 5 layers over 6 workers", ...).
  std::vector<std::string> notes;

  // Memory each worker needs in total (weights + KV cache + activations).
  int64_t BytesFor(int worker) const;
};

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_SHARD_PLAN_H_
