// The partitioner: model shapes, byte sizes, layer / pipeline plans and their errors.
#include "partitioner/partitioner.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/kv_cache.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/model_file.h"
#include "partitioner/byte_size.h"
#include "partitioner/model_shape.h"
#include "partitioner/plan_format.h"
#include "partitioner/stage_cost.h"
#include "tests/stories_config.h"

namespace shardrun {
namespace {

using ::shardrun::testing::StoriesConfig;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kKiB = 1024;
constexpr int64_t kMiB = 1024 * kKiB;
constexpr int64_t kGiB = 1024 * kMiB;

WorkerBudget Worker(std::string id, int64_t memory, double capacity = 1.0) {
  WorkerBudget w;
  w.worker_id = id;
  w.host = absl::StrCat("host-", id);
  w.memory_bytes = memory;
  w.compute_capacity = capacity;
  w.threads = 4;
  return w;
}

std::vector<WorkerBudget> EqualWorkers(int count, int64_t memory) {
  std::vector<WorkerBudget> workers;
  for (int i = 0; i < count; ++i) workers.push_back(Worker(absl::StrCat("w", i), memory));
  return workers;
}

ModelShape StoriesShape() { return ShapeOf(StoriesConfig(), TensorType::kF32); }

// TinyLlama-1.1B's hyperparameters, its matrices stored as `type`.
ModelShape TinyLlamaShape(TensorType type = TensorType::kF16) {
  ModelConfig c;
  c.name = "tinyllama";
  c.dim = 2048;
  c.hidden_dim = 5632;
  c.n_layers = 22;
  c.n_heads = 32;
  c.n_kv_heads = 4;
  c.vocab_size = 32000;
  c.context_length = 2048;
  return ShapeOf(c, type);
}

// `n` layers of `layer_bytes` each, a small embedding and head.
ModelShape UniformShape(int n, int64_t layer_bytes) {
  ModelShape s;
  s.name = "uniform";
  s.n_layers = n;
  s.dim = 64;
  s.kv_dim = 64;
  s.hidden_dim = 128;
  s.n_heads = 4;
  s.n_kv_heads = 4;
  s.vocab_size = 256;
  s.context_length = 16;
  s.layer_bytes.assign(n, layer_bytes);
  s.expert_bytes.assign(n, 0);
  s.embedding_bytes = 64 * 256 * 4;
  s.output_norm_bytes = 64 * 4;
  s.output_bytes = 64 * 256 * 4;
  return s;
}

// The slice of units [u, v) (0 = embedding, 1 .. n = layers, n + 1 = head).
ModelSlice SliceOfUnitsForTest(int u, int v, int n) {
  ModelSlice slice;
  slice.embedding = u == 0;
  slice.head = v == n + 2;
  slice.layers = {std::clamp(u - 1, 0, n), std::clamp(v - 1, 0, n)};
  return slice;
}

PlanOptions Options(PartitionKind kind = PartitionKind::kLayer) {
  PlanOptions o;
  o.kind = kind;
  return o;
}

std::vector<int> LayerCounts(const ShardPlan& plan) {
  std::vector<int> counts;
  for (const Stage& s : plan.stages) counts.push_back(s.layers.size());
  return counts;
}

// What every layer / pipeline plan must satisfy: stages in worker order, contiguous, every
// layer exactly once, the embedding on the first stage and the head on the last, the
// bookkeeping consistent, every worker within its memory.
void ExpectWellFormed(const ShardPlan& plan, const ModelShape& shape) {
  ASSERT_FALSE(plan.stages.empty());
  ASSERT_EQ(plan.stages.size(), plan.assignments.size());
  int next_layer = 0, last_worker = -1;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    ASSERT_EQ(plan.stages[s].assignments, std::vector<int>{static_cast<int>(s)});
    const ShardAssignment& a = plan.assignments[s];
    EXPECT_EQ(a.stage, static_cast<int>(s));
    EXPECT_GT(a.worker, last_worker) << "stages must follow the worker order";
    last_worker = a.worker;
    EXPECT_EQ(a.slice.layers.begin, next_layer) << "stage " << s;
    EXPECT_EQ(plan.stages[s].layers.begin, a.slice.layers.begin);
    EXPECT_EQ(plan.stages[s].layers.end, a.slice.layers.end);
    next_layer = a.slice.layers.end;
    EXPECT_EQ(a.slice.embedding, s == 0) << "stage " << s;
    EXPECT_EQ(a.slice.head, s + 1 == plan.stages.size()) << "stage " << s;
    EXPECT_LE(plan.BytesFor(a.worker), PlanningMemory(plan.workers[a.worker]))
        << plan.workers[a.worker].worker_id;
    EXPECT_EQ(plan.BytesFor(a.worker), a.weight_bytes + a.kv_cache_bytes + a.activation_bytes);
  }
  EXPECT_EQ(next_layer, shape.n_layers);
}

ShardPlan PlanOrDie(const ModelShape& shape, const std::vector<WorkerBudget>& workers,
                    const PlanOptions& options = Options()) {
  absl::StatusOr<ShardPlan> plan = MakePlan(shape, workers, options);
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? *std::move(plan) : ShardPlan{};
}

// --- Byte sizes -------------------------------------------------------------------------

TEST(ByteSizeTest, FormatsInBinaryUnits) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(512 * kMiB), "512 MiB");
  EXPECT_EQ(FormatBytes(3 * kGiB / 2), "1.5 GiB");
  EXPECT_EQ(FormatBytes(12345678), "11.8 MiB");
  EXPECT_EQ(FormatBytes(kMiB - 1), "1 MiB");  // 1023.999 KiB rounds up into the next unit
  EXPECT_EQ(FormatBytes(-300 * kMiB), "-300 MiB");
  EXPECT_EQ(FormatBytes(5 * 1024 * kGiB), "5 TiB");
}

TEST(ByteSizeTest, ParsesSizes) {
  const std::vector<std::pair<std::string, int64_t>> cases = {
      {"4096", 4096},   {"512M", 512 * kMiB},    {"1G", kGiB},      {"1.5GiB", 3 * kGiB / 2},
      {"2g", 2 * kGiB}, {" 64 KiB ", 64 * kKiB}, {"3MB", 3 * kMiB}, {"0.5k", 512},
      {"7b", 7},        {"1T", 1024 * kGiB},     {"0", 0},          {".25M", kMiB / 4},
  };
  for (const auto& [text, bytes] : cases) {
    absl::StatusOr<int64_t> parsed = ParseByteSize(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status();
    EXPECT_EQ(*parsed, bytes) << text;
  }
}

TEST(ByteSizeTest, RejectsBadSizes) {
  for (const char* text : {"", "  ", "abc", "-1G", "1.2.3G", "12X", "G", "1.5", "1e3",
                           "9999999999T", "99999999999999999999", "4 G B", "."}) {
    absl::StatusOr<int64_t> parsed = ParseByteSize(text);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << '"' << text << '"';
  }
  EXPECT_THAT(ParseByteSize("12X").status().message(),
              AllOf(HasSubstr("12X"), HasSubstr("unknown unit")));
}

TEST(ShardPlanTest, KindNames) {
  for (PartitionKind kind : {PartitionKind::kLayer, PartitionKind::kPipeline,
                             PartitionKind::kTensor, PartitionKind::kExpert}) {
    EXPECT_EQ(PartitionKindFromName(PartitionKindName(kind)), kind);
  }
  EXPECT_EQ(PartitionKindName(PartitionKind::kPipeline), "pipeline");
  EXPECT_EQ(PartitionKindFromName("Layer"), PartitionKind::kLayer);
  EXPECT_EQ(PartitionKindFromName("layers"), std::nullopt);
  EXPECT_EQ(BackendKindName(BackendKind::kCpu), "cpu");
  EXPECT_EQ(BackendKindName(BackendKind::kVulkan), "vulkan");
}

// --- Model shapes -------------------------------------------------------------------------

TEST(ModelShapeTest, ShapeOfStoriesFile) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model =
      ModelFile::Open(std::string(SHARDRUN_SHARED_DIR) + "/models/stories260K.bin");
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelShape shape = ShapeOf(**model);
  EXPECT_EQ(shape.n_layers, 5);
  EXPECT_EQ(shape.dim, 64);
  EXPECT_EQ(shape.kv_dim, 32);
  EXPECT_EQ(shape.hidden_dim, 172);
  EXPECT_EQ(shape.n_heads, 8);
  EXPECT_EQ(shape.n_kv_heads, 4);
  EXPECT_EQ(shape.vocab_size, 512);
  EXPECT_EQ(shape.context_length, 512);
  EXPECT_EQ(shape.n_experts, 0);
  EXPECT_TRUE(shape.tied_output);
  // Per layer, float32: two norms (64), q and output (64x64), k and v (64x32), three FFN
  // matrices (64x172).
  const int64_t layer = 4 * (2 * 64 + 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 172);
  EXPECT_EQ(shape.layer_bytes, std::vector<int64_t>(5, layer));
  EXPECT_EQ(shape.embedding_bytes, 4 * 512 * 64);
  EXPECT_EQ(shape.output_norm_bytes, 4 * 64);
  EXPECT_EQ(shape.output_bytes, shape.embedding_bytes);  // tied: the table again
  EXPECT_EQ(shape.TotalWeightBytes(), 5 * layer + 4 * 512 * 64 + 4 * 64);
  EXPECT_TRUE(ValidateShape(shape).ok());

  // The estimate from hyperparameters alone agrees with the file.
  const ModelShape estimate = StoriesShape();
  EXPECT_EQ(estimate.layer_bytes, shape.layer_bytes);
  EXPECT_EQ(estimate.embedding_bytes, shape.embedding_bytes);
  EXPECT_EQ(estimate.output_bytes, shape.output_bytes);
  EXPECT_EQ(estimate.output_norm_bytes, shape.output_norm_bytes);
}

TEST(ModelShapeTest, MoeExpertBytes) {
  // moe-mini's hyperparameters: 8 experts of hidden 256, 2 per token.
  ModelConfig c;
  c.dim = 128;
  c.hidden_dim = 256;
  c.n_layers = 4;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.vocab_size = 1024;
  c.context_length = 512;
  c.n_experts = 8;
  c.n_experts_used = 2;
  const ModelShape shape = ShapeOf(c, TensorType::kQ8_0);
  // One expert: gate, up and down, 128 x 256 values each, in Q8_0 blocks of 32 (34 bytes).
  const int64_t expert = 3 * (128 * 256 / 32) * 34;
  const int64_t attention = (2 * 128 * 128 + 2 * 128 * 64) / 32 * 34;
  const int64_t router = 4 * 128 * 8, norms = 2 * 4 * 128;
  EXPECT_EQ(shape.expert_bytes, std::vector<int64_t>(4, expert));
  EXPECT_EQ(shape.layer_bytes, std::vector<int64_t>(4, norms + attention + router + 8 * expert));
  // A token runs the shared part and 2 of the 8 experts.
  EXPECT_EQ(shape.LayerComputeBytes(0), norms + attention + router + 2 * expert);

  // The stacked tensors of a real MoE file give the same split.
  absl::StatusOr<std::unique_ptr<ModelFile>> model =
      ModelFile::Open(std::string(SHARDRUN_SHARED_DIR) + "/models/moe-mini-f32.gguf");
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelShape from_file = ShapeOf(**model);
  const ModelShape f32 = ShapeOf((*model)->config(), TensorType::kF32);
  EXPECT_EQ(from_file.n_experts, 8);
  EXPECT_EQ(from_file.n_experts_used, 2);
  EXPECT_EQ(from_file.expert_bytes, std::vector<int64_t>(4, 3 * 128 * 256 * 4));
  EXPECT_EQ(from_file.layer_bytes, f32.layer_bytes);
  EXPECT_EQ(from_file.embedding_bytes, f32.embedding_bytes);
}

TEST(ModelShapeTest, ValidateRejectsInconsistentShapes) {
  ModelShape shape = UniformShape(4, kMiB);
  shape.layer_bytes.pop_back();
  EXPECT_THAT(ValidateShape(shape).message(), HasSubstr("byte counts for 3 layers but 4"));
  shape = UniformShape(4, kMiB);
  shape.n_experts = 2;
  shape.n_experts_used = 3;
  EXPECT_FALSE(ValidateShape(shape).ok());
  shape = UniformShape(4, kMiB);
  shape.n_experts = 4;
  shape.expert_bytes[1] = kMiB;  // four experts of 1 MiB in a 1 MiB layer
  EXPECT_THAT(ValidateShape(shape).message(), HasSubstr("layer 1"));
}

TEST(StageCostTest, MatchesTheEngine) {
  const ModelShape shape = StoriesShape();
  const StageCostModel costs(shape, 256, 8, 3);
  const StageCost mid = costs.Cost({false, {1, 3}, false});
  EXPECT_EQ(mid.weight_bytes, 2 * shape.layer_bytes[0]);
  EXPECT_EQ(mid.kv_cache_bytes,
            3 * static_cast<int64_t>(KvCache::BytesFor({1, 3}, 256, shape.kv_dim)));
  EXPECT_EQ(mid.activation_bytes, 4 * 8 * (4 * 64 + 2 * 32 + 2 * 172));
  EXPECT_EQ(mid.compute_bytes, mid.weight_bytes);
  // The head adds the logits buffer and, away from the embedding, its own copy of the table.
  const StageCost last = costs.Cost({false, {3, 5}, true});
  EXPECT_EQ(last.activation_bytes, mid.activation_bytes + 4 * 512);
  EXPECT_EQ(last.weight_bytes,
            2 * shape.layer_bytes[0] + shape.output_norm_bytes + shape.output_bytes);
  const StageCost whole = costs.Cost({true, {0, 5}, true});
  EXPECT_EQ(whole.weight_bytes, shape.TotalWeightBytes());
  // A token reads one row of the embedding but all of the output matrix.
  EXPECT_EQ(whole.compute_bytes,
            shape.LayerBytes(0, 5) + 64 * 4 + shape.output_norm_bytes + shape.output_bytes);
}

// --- Layer plans --------------------------------------------------------------------------

TEST(LayerPlanTest, StoriesOverOneToSixWorkers) {
  const ModelShape shape = StoriesShape();
  // With equal workers the slowest stage decides: 5 layers over 2 workers cannot beat 3 layers
  // on one; over 3 or 4 it cannot beat 2 (so the 4th worker would only add a hop); over 5 or
  // more every stage has one layer and a 6th has nothing left.
  const std::vector<std::vector<int>> expected = {{5},       {3, 2},          {2, 2, 1},
                                                  {2, 2, 1}, {1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}};
  for (int n = 1; n <= 6; ++n) {
    SCOPED_TRACE(n);
    const ShardPlan plan = PlanOrDie(shape, EqualWorkers(n, 64 * kMiB));
    ExpectWellFormed(plan, shape);
    EXPECT_EQ(LayerCounts(plan), expected[n - 1]);
    EXPECT_EQ(plan.context_length, 512);
    const int spares = n - static_cast<int>(plan.stages.size());
    int spare_notes = 0;
    for (const std::string& note : plan.notes)
      spare_notes += note.find("spare") != std::string::npos;
    EXPECT_EQ(spare_notes, spares);
    for (int w = static_cast<int>(plan.stages.size()); w < n; ++w) {
      EXPECT_EQ(plan.BytesFor(w), 0);  // spares are the last workers
    }
  }
  const ShardPlan six = PlanOrDie(shape, EqualWorkers(6, 64 * kMiB));
  EXPECT_THAT(six.notes,
              ::testing::Contains(HasSubstr("w5 gets no layers (spare): 5 layers over 6")));
  const ShardPlan four = PlanOrDie(shape, EqualWorkers(4, 64 * kMiB));
  EXPECT_THAT(four.notes, ::testing::Contains(
                              AllOf(HasSubstr("w3 gets no layers"), HasSubstr("only add a hop"))));
}

TEST(LayerPlanTest, TiedHeadAwayFromTheEmbeddingHoldsItsOwnCopy) {
  const ModelShape shape = StoriesShape();
  const ShardPlan one = PlanOrDie(shape, EqualWorkers(1, 64 * kMiB));
  EXPECT_EQ(one.assignments[0].weight_bytes, shape.TotalWeightBytes());
  const ShardPlan two = PlanOrDie(shape, EqualWorkers(2, 64 * kMiB));
  EXPECT_EQ(two.assignments[0].weight_bytes + two.assignments[1].weight_bytes,
            shape.TotalWeightBytes() + shape.output_bytes);
  EXPECT_THAT(two.notes, ::testing::Contains(HasSubstr("w1 holds its own copy")));
}

TEST(LayerPlanTest, FasterWorkerGetsMoreLayers) {
  const ModelShape shape = UniformShape(30, kMiB);
  std::vector<WorkerBudget> workers = {Worker("fast", kGiB, 2.0), Worker("slow", kGiB, 1.0)};
  ShardPlan plan = PlanOrDie(shape, workers);
  ExpectWellFormed(plan, shape);
  EXPECT_EQ(LayerCounts(plan), (std::vector<int>{20, 10}));

  // Order is kept: the slow worker first gets the first, smaller share.
  std::swap(workers[0], workers[1]);
  plan = PlanOrDie(shape, workers);
  ExpectWellFormed(plan, shape);
  EXPECT_EQ(LayerCounts(plan), (std::vector<int>{10, 20}));

  // stories260K over a 2x and a 1x worker: 4 layers against 1 + the head.
  plan = PlanOrDie(StoriesShape(), {Worker("a", kGiB, 2.0), Worker("b", kGiB, 1.0)});
  ExpectWellFormed(plan, StoriesShape());
  EXPECT_EQ(LayerCounts(plan), (std::vector<int>{4, 1}));
}

TEST(LayerPlanTest, SmallMemoryWorkerGetsFewerLayersEvenIfFast) {
  const ModelShape shape = UniformShape(30, kMiB);
  const StageCostModel costs(shape, shape.context_length, 1, 1);
  // Room for exactly 4 middle layers with their KV cache and activations.
  const int64_t four_layers = costs.Cost({false, {0, 4}, false}).memory_bytes();
  const std::vector<WorkerBudget> workers = {Worker("a", kGiB), Worker("small", four_layers, 4.0),
                                             Worker("c", kGiB)};
  const ShardPlan plan = PlanOrDie(shape, workers);
  ExpectWellFormed(plan, shape);
  ASSERT_EQ(plan.stages.size(), 3u);
  EXPECT_EQ(plan.stages[1].layers.size(), 4);
  EXPECT_EQ(plan.BytesFor(1), four_layers);
  EXPECT_EQ(LayerCounts(plan), (std::vector<int>{13, 4, 13}));
}

TEST(LayerPlanTest, WorkerTooSmallForAnyLayerIsASpare) {
  const ModelShape shape = UniformShape(6, kMiB);
  const ShardPlan plan =
      PlanOrDie(shape, {Worker("a", kGiB), Worker("tiny", 100 * kKiB), Worker("c", kGiB)});
  ExpectWellFormed(plan, shape);
  EXPECT_EQ(plan.stages.size(), 2u);
  EXPECT_EQ(plan.assignments[1].worker, 2);
  EXPECT_THAT(plan.notes, ::testing::Contains(AllOf(HasSubstr("tiny gets no layers"),
                                                    HasSubstr("cannot hold one layer"))));
}

TEST(LayerPlanTest, TinyLlamaOverFourEqualWorkers) {
  const ModelShape shape = TinyLlamaShape();
  const ShardPlan plan = PlanOrDie(shape, EqualWorkers(4, 4 * kGiB));
  ExpectWellFormed(plan, shape);
  // The output head (32000 x 2048) reads as much as 1.5 layers per token, so the last stage
  // takes fewer layers; the embedding costs one row per token and weighs nothing.
  EXPECT_EQ(LayerCounts(plan), (std::vector<int>{6, 6, 6, 4}));
  EXPECT_THAT(plan.notes, ::testing::Contains(HasSubstr("slowest stage")));
}

TEST(LayerPlanTest, PipelineReservesACachePerSequence) {
  const ModelShape shape = TinyLlamaShape();
  PlanOptions options = Options(PartitionKind::kPipeline);
  options.max_sequences = 4;
  options.context_length = 1024;
  options.max_batch = 16;
  const ShardPlan plan = PlanOrDie(shape, EqualWorkers(4, 8 * kGiB), options);
  ExpectWellFormed(plan, shape);
  EXPECT_EQ(plan.kind, PartitionKind::kPipeline);
  EXPECT_EQ(plan.context_length, 1024);
  EXPECT_EQ(plan.max_batch, 16);
  EXPECT_EQ(plan.max_sequences, 4);
  for (const ShardAssignment& a : plan.assignments) {
    EXPECT_EQ(a.kv_cache_bytes,
              4 * static_cast<int64_t>(KvCache::BytesFor(a.slice.layers, 1024, shape.kv_dim)));
    EXPECT_EQ(a.activation_bytes, ActivationBytes(shape, 16, a.slice.head));
  }
  EXPECT_THAT(plan.notes, ::testing::Contains(HasSubstr("KV caches for 4 sequences")));
}

TEST(LayerPlanTest, HeadAloneOnAWorkerWhenNothingElseFits) {
  // A head as large as the rest of the model: the second worker holds it and nothing else.
  ModelShape shape = UniformShape(4, kMiB);
  shape.output_bytes = 40 * kMiB;
  const StageCostModel costs(shape, shape.context_length, 1, 1);
  const int64_t head_only = costs.Cost({false, {4, 4}, true}).memory_bytes();
  const ShardPlan plan = PlanOrDie(shape, {Worker("a", 8 * kMiB), Worker("b", head_only)});
  ExpectWellFormed(plan, shape);
  ASSERT_EQ(plan.stages.size(), 2u);
  EXPECT_EQ(SliceLabel(plan.assignments[1].slice), "head");
  EXPECT_EQ(SliceLabel(plan.assignments[0].slice), "emb+0..3");
  EXPECT_THAT(plan.notes, ::testing::Contains(HasSubstr("b holds only the output head")));
}

TEST(LayerPlanTest, VulkanWorkerIsPlannedAgainstItsGpuMemory) {
  const ModelShape shape = UniformShape(10, kMiB);
  WorkerBudget gpu = Worker("gpu", 64 * kGiB);
  gpu.backend = BackendKind::kVulkan;
  gpu.gpu_memory_bytes = 3 * kMiB + 512 * kKiB;
  EXPECT_EQ(PlanningMemory(gpu), gpu.gpu_memory_bytes);
  const ShardPlan plan = PlanOrDie(shape, {gpu, Worker("cpu", kGiB)});
  ExpectWellFormed(plan, shape);
  EXPECT_EQ(plan.stages[0].layers.size(), 3);
  EXPECT_THAT(plan.notes, ::testing::Contains(HasSubstr("planned against its GPU memory")));
}

// Every split of `n` layers (bare ends allowed) over `workers`, by enumeration: the fastest
// slowest stage among those that fit, and the fewest stages that reach it within 1%.
struct BruteForce {
  double glued = std::numeric_limits<double>::infinity();  // embedding / head beside layers
  double any = std::numeric_limits<double>::infinity();    // bare ends allowed
  int glued_stages = std::numeric_limits<int>::max();      // fewest stages within 1% of `glued`
};

BruteForce Enumerate(const StageCostModel& costs, const std::vector<WorkerBudget>& workers) {
  const int n = costs.shape().n_layers, units = n + 2;
  struct Split {
    double slowest;
    int stages;
    bool bare;
  };
  std::vector<Split> splits;
  // Each worker in turn takes units [u, v), v >= u (v == u: spare).
  std::function<void(size_t, int, Split)> go = [&](size_t w, int u, Split split) {
    if (u == units) {
      splits.push_back(split);
      return;
    }
    if (w == workers.size()) return;
    for (int v = u; v <= units; ++v) {
      if (v == u) {
        go(w + 1, u, split);
        continue;
      }
      const StageCost cost = costs.Cost(SliceOfUnitsForTest(u, v, n));
      if (cost.memory_bytes() > PlanningMemory(workers[w])) break;
      Split next = split;
      next.slowest = std::max(split.slowest, cost.compute_bytes / workers[w].compute_capacity);
      next.stages += 1;
      next.bare = split.bare || (u == 0 && v == 1) || (u == n + 1 && v == n + 2);
      go(w + 1, v, next);
    }
  };
  go(0, 0, {0, 0, false});
  BruteForce result;
  for (const Split& s : splits) {
    result.any = std::min(result.any, s.slowest);
    if (!s.bare) result.glued = std::min(result.glued, s.slowest);
  }
  for (const Split& s : splits) {
    if (!s.bare && s.slowest <= result.glued * 1.01) {
      result.glued_stages = std::min(result.glued_stages, s.stages);
    }
  }
  return result;
}

TEST(LayerPlanTest, MatchesExhaustiveSearchOnSmallCases) {
  std::mt19937 random(1234);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(random);
  };
  int planned = 0, glued_infeasible = 0, failed = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    SCOPED_TRACE(trial);
    const int n = static_cast<int>(uniform(1, 6));
    ModelShape shape = UniformShape(n, 0);
    for (int64_t& bytes : shape.layer_bytes) bytes = uniform(1, 8) * kMiB;
    // Large ends now and then, so that some cases need a stage of the embedding or head alone.
    shape.embedding_bytes = uniform(1, 24) * kMiB;
    shape.output_bytes = uniform(1, 30) * kMiB;
    shape.tied_output = uniform(0, 1) == 1;
    std::vector<WorkerBudget> workers;
    const int count = static_cast<int>(uniform(1, 4));
    for (int w = 0; w < count; ++w) {
      workers.push_back(
          Worker(absl::StrCat("w", w), uniform(2, 40) * kMiB, static_cast<double>(uniform(1, 4))));
    }
    const StageCostModel costs(shape, shape.context_length, 1, 1);
    const BruteForce best = Enumerate(costs, workers);
    absl::StatusOr<ShardPlan> plan = MakePlan(shape, workers, Options());
    if (best.any == std::numeric_limits<double>::infinity()) {
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << plan.status();
      for (const WorkerBudget& w : workers) {
        EXPECT_THAT(plan.status().message(), HasSubstr("\n  " + w.worker_id));
      }
      ++failed;
      continue;
    }
    ASSERT_TRUE(plan.ok()) << plan.status();
    ExpectWellFormed(*plan, shape);
    double slowest = 0;
    bool bare = false;
    for (const ShardAssignment& a : plan->assignments) {
      slowest = std::max(
          slowest, costs.Cost(a.slice).compute_bytes / plan->workers[a.worker].compute_capacity);
      bare = bare || a.slice.layers.size() == 0;
    }
    if (best.glued < std::numeric_limits<double>::infinity()) {
      EXPECT_FALSE(bare);
      EXPECT_GE(slowest, best.glued * (1 - 1e-12));
      EXPECT_LE(slowest, best.glued * 1.01);
      EXPECT_EQ(static_cast<int>(plan->stages.size()), best.glued_stages);
      ++planned;
    } else {
      EXPECT_TRUE(bare);
      EXPECT_GE(slowest, best.any * (1 - 1e-12));
      EXPECT_LE(slowest, best.any * 1.01);
      ++glued_infeasible;
    }
  }
  // The random cases reach every outcome.
  EXPECT_GT(planned, 200);
  EXPECT_GT(glued_infeasible, 20);
  EXPECT_GT(failed, 200);
}

TEST(LayerPlanTest, HundredsOfLayersOverDozensOfWorkers) {
  const ModelShape shape = UniformShape(320, 64 * kMiB);
  std::vector<WorkerBudget> workers;
  for (int w = 0; w < 48; ++w) {
    workers.push_back(Worker(absl::StrCat("w", w), (1 + w % 5) * kGiB, 1.0 + w % 3));
  }
  const ShardPlan plan = PlanOrDie(shape, workers);
  ExpectWellFormed(plan, shape);
  EXPECT_GT(plan.stages.size(), 30u);
}

// --- Errors ---------------------------------------------------------------------------------

TEST(LayerPlanTest, ModelTooLargeNamesTheShortfallPerWorker) {
  const ModelShape shape = TinyLlamaShape();
  const std::vector<WorkerBudget> workers = {Worker("w0", 512 * kMiB), Worker("w1", 256 * kMiB),
                                             Worker("w2", 128 * kMiB)};
  absl::StatusOr<ShardPlan> plan = MakePlan(shape, workers, Options());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << plan.status();
  const std::string message(plan.status().message());
  const StageCostModel costs(shape, shape.context_length, 1, 1);
  const StageCost whole = costs.Cost({true, {0, 22}, true});
  EXPECT_THAT(message, HasSubstr("model tinyllama does not fit on 3 workers"));
  EXPECT_THAT(message, HasSubstr("needs at least " + FormatBytes(whole.memory_bytes())));
  EXPECT_THAT(message, HasSubstr("weights " + FormatBytes(whole.weight_bytes)));
  EXPECT_THAT(message, HasSubstr("KV cache " + FormatBytes(whole.kv_cache_bytes)));
  EXPECT_THAT(message, HasSubstr("the workers offer 896 MiB (w0 512 MiB, w1 256 MiB, w2 128 MiB)"));
  EXPECT_THAT(message,
              HasSubstr("short by at least " + FormatBytes(whole.memory_bytes() - 896 * kMiB)));
  EXPECT_THAT(message, HasSubstr("best split found:"));
  for (const char* id : {"\n  w0 emb+", "\n  w1 ", "\n  w2 "}) EXPECT_THAT(message, HasSubstr(id));
  EXPECT_THAT(message, HasSubstr("of 512 MiB, over by"));
  EXPECT_THAT(message, Not(HasSubstr("alone needs")));  // every layer fits on its own
}

TEST(LayerPlanTest, LayerLargerThanEveryWorker) {
  ModelShape shape = UniformShape(4, kMiB);
  shape.layer_bytes[2] = 100 * kMiB;
  absl::StatusOr<ShardPlan> plan = MakePlan(shape, EqualWorkers(4, 50 * kMiB), Options());
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition) << plan.status();
  const std::string message(plan.status().message());
  EXPECT_THAT(message, HasSubstr("enough in total"));
  EXPECT_THAT(message, HasSubstr("layer 2 alone needs 100 MiB"));
  EXPECT_THAT(message, HasSubstr("the largest worker, w0, offers 50 MiB"));
  EXPECT_THAT(message, HasSubstr("cannot split a layer"));
  EXPECT_THAT(message, HasSubstr("over by"));
}

// --- Expert plans ---------------------------------------------------------------------------

ModelShape MoeShape(int experts) {
  ModelConfig c = StoriesConfig();
  c.tied_output = false;
  c.n_experts = experts;
  c.n_experts_used = 2;
  return ShapeOf(c, TensorType::kQ8_0);
}

TEST(ExpertPlanTest, EveryExpertOnceSpreadEvenly) {
  const ModelShape shape = MoeShape(8);
  const ShardPlan plan = PlanOrDie(shape, EqualWorkers(2, kGiB), Options(PartitionKind::kExpert));
  std::set<std::pair<int, int>> seen;
  std::vector<int> per_worker(2, 0);
  for (const ShardAssignment& a : plan.assignments) {
    EXPECT_FALSE(a.slice.experts);
    for (const ExpertRef& e : a.experts) {
      EXPECT_TRUE(seen.insert({e.layer, e.expert}).second) << "placed twice";
      per_worker[a.worker]++;
    }
  }
  EXPECT_EQ(seen.size(), 5u * 8u);
  EXPECT_EQ(per_worker[0], 20);
  EXPECT_EQ(per_worker[1], 20);
  // Memory: the experts are in the weights of whoever holds them.
  int64_t weights = 0;
  for (const ShardAssignment& a : plan.assignments) weights += a.weight_bytes;
  EXPECT_EQ(weights, shape.TotalWeightBytes());
}

TEST(ExpertPlanTest, HotExpertsAreReplicatedWithACalibration) {
  const ModelShape shape = MoeShape(4);
  PlanOptions options = Options(PartitionKind::kExpert);
  options.expert_load.assign(5, {1, 1, 1, 1});
  options.expert_load[2] = {30, 1, 1, 1};  // layer 2's expert 0 takes most of the calls
  const ShardPlan plan = PlanOrDie(shape, EqualWorkers(3, kGiB), options);
  int copies = 0;
  for (const ShardAssignment& a : plan.assignments) {
    for (const ExpertRef& e : a.experts) copies += e.layer == 2 && e.expert == 0;
  }
  EXPECT_EQ(copies, 2);
  EXPECT_THAT(absl::StrJoin(plan.notes, "\n"), HasSubstr("expert 0 of layer 2 is hot"));
}

TEST(ExpertPlanTest, ErrorsAreClear) {
  absl::StatusOr<ShardPlan> dense =
      MakePlan(StoriesShape(), EqualWorkers(2, kGiB), Options(PartitionKind::kExpert));
  EXPECT_EQ(dense.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dense.status().message(), HasSubstr("needs a mixture-of-experts model"));
  const ModelShape shape = MoeShape(64);
  absl::StatusOr<ShardPlan> small =
      MakePlan(shape, EqualWorkers(2, 2 * kMiB), Options(PartitionKind::kExpert));
  EXPECT_EQ(small.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(small.status().message(), HasSubstr("the experts do not fit"));
}

// --- Tensor plans ---------------------------------------------------------------------------

TEST(TensorPlanTest, OneStageSplitInProportionToCapacity) {
  const ModelShape shape = TinyLlamaShape(TensorType::kQ4_0);
  const std::vector<WorkerBudget> workers = {Worker("a", kGiB, 2.0), Worker("b", kGiB, 1.0),
                                             Worker("c", kGiB, 1.0)};
  const ShardPlan plan = PlanOrDie(shape, workers, Options(PartitionKind::kTensor));
  ASSERT_EQ(plan.stages.size(), 1u);
  ASSERT_EQ(plan.assignments.size(), 3u);
  EXPECT_EQ(plan.reduction, ReductionPath::kAllToAll);
  int heads = 0, columns = 0, vocab = 0;
  for (int r = 0; r < 3; ++r) {
    const ShardAssignment& a = plan.assignments[r];
    EXPECT_EQ(a.rank, r);
    EXPECT_TRUE(a.slice.embedding && a.slice.head);
    ASSERT_TRUE(a.slice.split.has_value());
    EXPECT_EQ(a.slice.split->kv_heads.begin, heads);
    EXPECT_EQ(a.slice.split->ffn_columns.begin, columns);
    EXPECT_EQ(a.slice.split->ffn_columns.begin % 32, 0);
    heads = a.slice.split->kv_heads.end;
    columns = a.slice.split->ffn_columns.end;
    vocab += a.slice.split->vocab.size();
  }
  EXPECT_EQ(heads, 4);
  EXPECT_EQ(columns, 5632);
  EXPECT_EQ(vocab, 32000);
  // The fast worker gets half of everything.
  EXPECT_EQ(plan.assignments[0].slice.split->kv_heads.size(), 2);
  EXPECT_EQ(plan.assignments[0].slice.split->ffn_columns.size(), 2816);
  EXPECT_EQ(plan.assignments[0].slice.split->vocab.size(), 16000);
  // Its weights are about half of the split matrices, plus the whole embedding.
  EXPECT_GT(plan.assignments[0].weight_bytes, plan.assignments[1].weight_bytes);
  EXPECT_LT(plan.assignments[0].weight_bytes, shape.TotalWeightBytes());
  EXPECT_THAT(FormatPlan(plan), HasSubstr("all-to-all"));
}

TEST(TensorPlanTest, StagesOfTpWorkers) {
  const ModelShape shape = StoriesShape();
  PlanOptions options = Options(PartitionKind::kTensor);
  options.tensor_parallel = 2;
  const ShardPlan plan = PlanOrDie(shape, EqualWorkers(4, kGiB), options);
  ASSERT_EQ(plan.stages.size(), 2u);
  EXPECT_EQ(plan.stages[0].layers.begin, 0);
  EXPECT_EQ(plan.stages[0].layers.end, plan.stages[1].layers.begin);
  EXPECT_EQ(plan.stages[1].layers.end, 5);
  for (const ShardAssignment& a : plan.assignments) {
    EXPECT_EQ(a.slice.embedding, a.stage == 0);
    EXPECT_EQ(a.slice.head, a.stage == 1);
    EXPECT_EQ(a.rank, a.worker % 2);
  }
  options.tensor_parallel = 3;
  absl::StatusOr<ShardPlan> bad = MakePlan(shape, EqualWorkers(4, kGiB), options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("does not divide 4 workers"));
  options.tensor_parallel = 1;  // six stages of one worker but five layers
  EXPECT_THAT(MakePlan(shape, EqualWorkers(6, kGiB), options).status().message(),
              HasSubstr("only 5 layers"));
}

TEST(TensorPlanTest, QuantizationBlocksStayWhole) {
  ModelConfig c = StoriesConfig();
  c.hidden_dim = 192;  // 6 blocks of 32
  // A KV head is 16 columns of attn_output: two of them make one Q8_0 block.
  const ModelShape shape = ShapeOf(c, TensorType::kQ8_0);
  EXPECT_EQ(shape.kv_head_unit, 2);
  EXPECT_EQ(shape.ffn_column_unit, 32);
  const ShardPlan plan = PlanOrDie(shape, EqualWorkers(3, kGiB), Options(PartitionKind::kTensor));
  for (const ShardAssignment& a : plan.assignments) {
    EXPECT_EQ(a.slice.split->kv_heads.size() % 2, 0);
    EXPECT_EQ(a.slice.split->ffn_columns.size(), 64);
  }
  // Two units of heads over three workers: one gets none, and the plan says so.
  EXPECT_THAT(absl::StrJoin(plan.notes, "\n"), HasSubstr("gets no attention heads"));
}

TEST(TensorPlanTest, ShortfallNamesEachWorker) {
  const ModelShape shape = TinyLlamaShape();
  absl::StatusOr<ShardPlan> plan =
      MakePlan(shape, EqualWorkers(2, 256 * kMiB), Options(PartitionKind::kTensor));
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              AllOf(HasSubstr("w0 needs"), HasSubstr("w1 needs"), HasSubstr("short by")));
}

TEST(TensorPlanTest, RefusesMoeModels) {
  ModelConfig c = StoriesConfig();
  c.n_experts = 4;
  c.n_experts_used = 2;
  absl::StatusOr<ShardPlan> plan = MakePlan(ShapeOf(c, TensorType::kF32), EqualWorkers(2, kGiB),
                                            Options(PartitionKind::kTensor));
  EXPECT_THAT(plan.status().message(), HasSubstr("use --type expert"));
}

TEST(MakePlanTest, RejectsBadInputs) {
  const ModelShape shape = StoriesShape();
  auto code = [&](std::vector<WorkerBudget> workers, PlanOptions options = Options()) {
    return MakePlan(shape, workers, options).status().code();
  };
  EXPECT_EQ(code({}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({Worker("a", kGiB), Worker("a", kGiB)}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({Worker("a", kGiB, 0.0)}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({Worker("a", -1)}), absl::StatusCode::kInvalidArgument);
  PlanOptions too_long = Options();
  too_long.context_length = 513;
  EXPECT_THAT(MakePlan(shape, EqualWorkers(1, kGiB), too_long).status().message(),
              HasSubstr("context length 513"));
  PlanOptions no_batch = Options();
  no_batch.max_batch = 0;
  EXPECT_EQ(code(EqualWorkers(1, kGiB), no_batch), absl::StatusCode::kInvalidArgument);
}

// --- Display --------------------------------------------------------------------------------

TEST(PlanFormatTest, SliceLabels) {
  EXPECT_EQ(SliceLabel({true, {0, 4}, false}), "emb+0..3");
  EXPECT_EQ(SliceLabel({false, {4, 8}, true}), "4..7+head");
  EXPECT_EQ(SliceLabel({false, {5, 6}, false}), "5");
  EXPECT_EQ(SliceLabel({true, {0, 5}, true}), "emb+0..4+head");
  EXPECT_EQ(SliceLabel({true, {0, 0}, false}), "emb");
  EXPECT_EQ(SliceLabel({false, {5, 5}, true}), "head");
}

TEST(PlanFormatTest, TableShowsWorkersRangesAndNotes) {
  const ShardPlan plan = PlanOrDie(StoriesShape(), EqualWorkers(4, 64 * kMiB));
  const std::string text = FormatPlan(plan);
  EXPECT_THAT(text, HasSubstr("layer plan: 3 stages on 4 workers, context 512"));
  for (const char* column : {"worker", "host", "stage", "layers", "weights", "KV cache",
                             "memory use", "threads/backend"}) {
    EXPECT_THAT(text, HasSubstr(column));
  }
  for (const char* id : {"w0", "w1", "w2", "w3", "host-w0"}) EXPECT_THAT(text, HasSubstr(id));
  for (const char* range : {"emb+0..1", "2..3", "4+head", "(spare)"}) {
    EXPECT_THAT(text, HasSubstr(range));
  }
  EXPECT_THAT(text, HasSubstr("/ 64 MiB ("));
  EXPECT_THAT(text, HasSubstr("4 cpu"));
  EXPECT_THAT(text, HasSubstr("notes:\n  - worker w3 gets no layers"));
  // The row of w0 shows what the plan holds for it.
  const ShardAssignment& first = plan.assignments[0];
  EXPECT_THAT(text, HasSubstr(FormatBytes(first.weight_bytes)));
  EXPECT_THAT(text, HasSubstr(FormatBytes(plan.BytesFor(0)) + " / 64 MiB"));
}

}  // namespace
}  // namespace shardrun
