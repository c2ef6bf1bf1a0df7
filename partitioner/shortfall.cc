#include "partitioner/shortfall.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "partitioner/byte_size.h"
#include "partitioner/layer_split.h"
#include "partitioner/plan_format.h"

namespace shardrun {
namespace {

std::string Plural(int64_t count, std::string_view noun) {
  return absl::StrCat(count, " ", std::string(noun), count == 1 ? "" : "s");
}

std::string Breakdown(const StageCost& cost) {
  return absl::StrCat(FormatBytes(cost.memory_bytes()), " (weights ",
                      FormatBytes(cost.weight_bytes), " + KV cache ",
                      FormatBytes(cost.kv_cache_bytes), " + activations ",
                      FormatBytes(cost.activation_bytes), ")");
}

// "layer 7 alone needs ..." for every part that no worker can hold even by itself, largest
// layer first; empty if every part fits somewhere.
std::string PartsTooLarge(const StageCostModel& costs, const WorkerBudget& largest) {
  const int n = costs.shape().n_layers;
  const int64_t memory = PlanningMemory(largest);
  const std::string offer = absl::StrCat(" but the largest worker, ", largest.worker_id,
                                         ", offers ", FormatBytes(memory));
  std::string out;
  int oversized_layers = 0, worst_layer = -1;
  int64_t worst_need = 0;
  for (int layer = 0; layer < n; ++layer) {
    const int64_t need = costs.Cost({false, {layer, layer + 1}, false}).memory_bytes();
    if (need <= memory) continue;
    ++oversized_layers;
    if (need > worst_need) {
      worst_need = need;
      worst_layer = layer;
    }
  }
  if (worst_layer >= 0) {
    absl::StrAppend(
        &out, "\nlayer ", worst_layer, " alone needs ",
        Breakdown(costs.Cost({false, {worst_layer, worst_layer + 1}, false})), offer,
        oversized_layers > 1
            ? absl::StrCat(" (", oversized_layers, " of the ", n, " layers are too large)")
            : "",
        ": layer and pipeline plans cannot split a layer across workers (tensor plans, which "
        "would, are not supported yet)");
  }
  const struct {
    const char* name;
    ModelSlice slice;
  } ends[] = {{"the embedding", {true, {0, 0}, false}}, {"the output head", {false, {n, n}, true}}};
  for (const auto& end : ends) {
    const StageCost cost = costs.Cost(end.slice);
    if (cost.memory_bytes() > memory) {
      absl::StrAppend(&out, "\n", end.name, " alone needs ", Breakdown(cost), offer);
    }
  }
  return out;
}

}  // namespace

absl::Status ShortfallError(const StageCostModel& costs, std::span<const WorkerBudget> workers) {
  const ModelShape& shape = costs.shape();
  const int n = shape.n_layers;
  // The whole model on one worker: every split needs at least this much in total.
  const StageCost whole = costs.Cost({true, {0, n}, true});
  int64_t offered = 0;
  size_t largest = 0;
  std::vector<std::string> offers;
  for (size_t w = 0; w < workers.size(); ++w) {
    const int64_t memory = PlanningMemory(workers[w]);
    offered += memory;
    offers.push_back(absl::StrCat(workers[w].worker_id, " ", FormatBytes(memory)));
    if (memory > PlanningMemory(workers[largest])) largest = w;
  }

  std::string message = absl::StrCat(
      "model ", shape.name.empty() ? "" : absl::StrCat(shape.name, " "), "does not fit on ",
      Plural(workers.size(), "worker"), ": it needs at least ", FormatBytes(whole.memory_bytes()),
      " (weights ", FormatBytes(whole.weight_bytes), " + KV cache ",
      FormatBytes(whole.kv_cache_bytes), " for ", costs.context_length(), " positions x ",
      Plural(costs.max_sequences(), "sequence"), " + activations ",
      FormatBytes(whole.activation_bytes), ") but the workers offer ", FormatBytes(offered), " (",
      absl::StrJoin(offers, ", "), ")");
  if (offered < whole.memory_bytes()) {
    absl::StrAppend(&message, ", short by at least ", FormatBytes(whole.memory_bytes() - offered));
  } else {
    absl::StrAppend(&message,
                    ": enough in total, but no split into contiguous stages fits every worker");
  }
  absl::StrAppend(&message, PartsTooLarge(costs, workers[largest]));

  absl::StrAppend(&message, "\nbest split found:");
  const UnitSplit split = LeastOverflowSplit(costs, workers);
  for (size_t w = 0; w < workers.size(); ++w) {
    const WorkerBudget& worker = workers[w];
    if (split[w].size() == 0) {
      absl::StrAppend(&message, "\n  ", worker.worker_id, ": spare");
      continue;
    }
    const ModelSlice slice = SliceOfUnits(split[w], n);
    const StageCost cost = costs.Cost(slice);
    const int64_t memory = PlanningMemory(worker);
    const int64_t over = cost.memory_bytes() - memory;
    absl::StrAppend(&message, "\n  ", worker.worker_id, " ", SliceLabel(slice), ": needs ",
                    Breakdown(cost), " of ", FormatBytes(memory),
                    over > 0 ? absl::StrCat(", over by ", FormatBytes(over)) : ", fits");
  }
  return absl::FailedPreconditionError(message);
}

}  // namespace shardrun
