#include "partitioner/partitioner.h"

#include <cmath>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "partitioner/expert_planner.h"
#include "partitioner/layer_planner.h"
#include "partitioner/tensor_planner.h"

namespace shardrun {
namespace {

absl::Status CheckInputs(const ModelShape& shape, std::span<const WorkerBudget> workers,
                         const PlanOptions& options) {
  if (absl::Status s = ValidateShape(shape); !s.ok()) return s;
  if (workers.empty()) return absl::InvalidArgumentError("cannot plan: no workers registered");
  absl::flat_hash_set<std::string> ids;
  for (const WorkerBudget& w : workers) {
    if (w.worker_id.empty()) return absl::InvalidArgumentError("a worker has an empty id");
    if (!ids.insert(w.worker_id).second) {
      return absl::InvalidArgumentError(absl::StrCat("two workers have the id ", w.worker_id));
    }
    if (w.memory_bytes < 0 || w.gpu_memory_bytes < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker ", w.worker_id, " declares negative memory"));
    }
    if (!std::isfinite(w.compute_capacity) || w.compute_capacity <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("worker ", w.worker_id,
                                                     " declares compute capacity ",
                                                     w.compute_capacity, "; it must be positive"));
    }
  }
  if (options.context_length < 0 || options.context_length > shape.context_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "context length ", options.context_length, " is outside 1 .. ", shape.context_length,
        ", the context length of ", shape.name.empty() ? "the model" : shape.name));
  }
  if (options.max_batch < 1 || options.max_sequences < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch (", options.max_batch,
                                                   ") and max_sequences (", options.max_sequences,
                                                   ") must be positive"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ShardPlan> MakePlan(const ModelShape& shape, std::span<const WorkerBudget> workers,
                                   const PlanOptions& options) {
  if (absl::Status s = CheckInputs(shape, workers, options); !s.ok()) return s;
  if (options.kind == PartitionKind::kTensor) return PlanTensor(shape, workers, options);
  if (options.kind == PartitionKind::kExpert) return PlanExperts(shape, workers, options);
  return PlanLayers(shape, workers, options);
}

}  // namespace shardrun
