#include "partitioner/shard_plan.h"

#include <array>
#include <cctype>
#include <utility>

namespace shardrun {
namespace {

constexpr std::array<std::pair<PartitionKind, std::string_view>, 4> kKindNames = {{
    {PartitionKind::kLayer, "layer"},
    {PartitionKind::kPipeline, "pipeline"},
    {PartitionKind::kTensor, "tensor"},
    {PartitionKind::kExpert, "expert"},
}};

constexpr std::array<std::pair<ReductionPath, std::string_view>, 3> kReductionNames = {{
    {ReductionPath::kNone, "none"},
    {ReductionPath::kAllToAll, "all-to-all"},
    {ReductionPath::kGatherBroadcast, "gather-broadcast"},
}};

}  // namespace

bool ScopeAllowsSlice(const auth::ShardScope& scope, const ModelSlice& slice, int n_experts) {
  if (scope.whole_model()) return true;
  if (!scope.AllowsLayers(slice.layers.begin, slice.layers.end)) return false;
  if (!slice.experts || n_experts == 0) return true;
  for (int layer = slice.layers.begin; layer < slice.layers.end; ++layer) {
    for (int expert = 0; expert < n_experts; ++expert) {
      if (!scope.AllowsExpert(layer, expert)) return false;
    }
  }
  return true;
}

std::string_view ReductionPathName(ReductionPath path) {
  for (const auto& [p, name] : kReductionNames) {
    if (p == path) return name;
  }
  return "unknown";
}

std::optional<ReductionPath> ReductionPathFromName(std::string_view name) {
  for (const auto& [path, p_name] : kReductionNames) {
    if (name == p_name) return path;
  }
  return std::nullopt;
}

std::string_view PartitionKindName(PartitionKind kind) {
  for (const auto& [k, name] : kKindNames) {
    if (k == kind) return name;
  }
  return "unknown";
}

std::optional<PartitionKind> PartitionKindFromName(std::string_view name) {
  // Case-insensitive: `--type Pipeline` means the same as `--type pipeline`.
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& [kind, k_name] : kKindNames) {
    if (lower == k_name) return kind;
  }
  return std::nullopt;
}

std::string_view BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kCpu:
      return "cpu";
    case BackendKind::kVulkan:
      return "vulkan";
  }
  return "unknown";
}

int64_t ShardPlan::BytesFor(int worker) const {
  int64_t bytes = 0;
  for (const ShardAssignment& a : assignments) {
    if (a.worker == worker) bytes += a.weight_bytes + a.kv_cache_bytes + a.activation_bytes;
  }
  return bytes;
}

}  // namespace shardrun
