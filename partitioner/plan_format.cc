#include "partitioner/plan_format.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "partitioner/byte_size.h"
#include "partitioner/stage_cost.h"

namespace shardrun {
namespace {

using Row = std::vector<std::string>;

std::string Plural(int64_t count, std::string_view noun) {
  return absl::StrCat(count, " ", std::string(noun), count == 1 ? "" : "s");
}

std::string MemoryUse(int64_t used, int64_t memory) {
  if (memory <= 0) return absl::StrCat(FormatBytes(used), " / ?");
  return absl::StrFormat("%s / %s (%.1f%%)", FormatBytes(used), FormatBytes(memory),
                         100.0 * static_cast<double>(used) / static_cast<double>(memory));
}

// "4..7" (inclusive, as a user counts) or "none".
std::string RangeLabel(IndexRange r) {
  return r.size() > 0 ? absl::StrCat(r.begin, "..", r.end - 1) : "none";
}

std::string AssignmentLabel(const ShardAssignment& a) {
  std::string label = SliceLabel(a.slice);
  if (const std::optional<TensorSplit>& t = a.slice.split) {
    absl::StrAppend(&label, " rank ", a.rank, ": kv heads ", RangeLabel(t->kv_heads), ", ffn ",
                    RangeLabel(t->ffn_columns));
    if (a.slice.head) absl::StrAppend(&label, ", vocab ", RangeLabel(t->vocab));
  }
  if (!a.experts.empty()) absl::StrAppend(&label, " ", Plural(a.experts.size(), "expert"));
  return label;
}

// Left-aligned columns two spaces apart; no trailing spaces.
std::string Table(const std::vector<Row>& rows) {
  std::vector<size_t> width;
  for (const Row& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const Row& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      absl::StrAppend(&line, row[c]);
      if (c + 1 < row.size()) line.append(width[c] - row[c].size() + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace

std::string SliceLabel(const ModelSlice& slice) {
  std::vector<std::string> parts;
  if (slice.embedding) parts.push_back("emb");
  if (slice.layers.size() == 1) {
    parts.push_back(absl::StrCat(slice.layers.begin));
  } else if (slice.layers.size() > 1) {
    parts.push_back(absl::StrCat(slice.layers.begin, "..", slice.layers.end - 1));
  }
  if (slice.head) parts.push_back("head");
  return parts.empty() ? "-" : absl::StrJoin(parts, "+");
}

std::string FormatPlan(const ShardPlan& plan) {
  const int used = static_cast<int>(plan.stages.size());
  std::string out = absl::StrCat(
      std::string(PartitionKindName(plan.kind)), " plan: ", Plural(used, "stage"), " on ",
      Plural(plan.workers.size(), "worker"), ", context ", plan.context_length, ", batch ",
      plan.max_batch, ", ", Plural(plan.max_sequences, "sequence"), " per worker\n");

  std::vector<Row> rows = {{"worker", "host", "stage", "layers", "weights", "KV cache",
                            "activations", "memory use", "threads/backend"}};
  for (int w = 0; w < static_cast<int>(plan.workers.size()); ++w) {
    const WorkerBudget& worker = plan.workers[w];
    const std::string compute =
        absl::StrCat(worker.threads, " ", std::string(BackendKindName(worker.backend)));
    const int64_t memory = PlanningMemory(worker);
    const std::string host = worker.host.empty() ? "-" : worker.host;
    bool assigned = false;
    for (const ShardAssignment& a : plan.assignments) {
      if (a.worker != w) continue;
      assigned = true;
      const int64_t total = a.weight_bytes + a.kv_cache_bytes + a.activation_bytes;
      rows.push_back({worker.worker_id, host, a.stage >= 0 ? absl::StrCat(a.stage) : "-",
                      AssignmentLabel(a), FormatBytes(a.weight_bytes),
                      FormatBytes(a.kv_cache_bytes), FormatBytes(a.activation_bytes),
                      MemoryUse(total, memory), compute});
    }
    if (!assigned) {
      rows.push_back(
          {worker.worker_id, host, "-", "(spare)", "-", "-", "-", MemoryUse(0, memory), compute});
    }
  }
  absl::StrAppend(&out, Table(rows));
  if (!plan.notes.empty()) {
    absl::StrAppend(&out, "notes:\n");
    for (const std::string& note : plan.notes) absl::StrAppend(&out, "  - ", note, "\n");
  }
  return out;
}

}  // namespace shardrun
