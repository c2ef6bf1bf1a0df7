// Tensor parallelism in one process: a group of StageForwards, one thread each, adding their
// partial sums through a barrier, equals the whole model (greedy tokens exactly, logits within
// 1e-4 of their range: the sums are added in another order). The splits are the partitioner's.
#include "engine/tensor_split.h"

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/local_model.h"
#include "engine/partial_sum.h"
#include "engine/stage_forward.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/model_file.h"
#include "partitioner/model_shape.h"
#include "partitioner/tensor_planner.h"

namespace shardrun {
namespace {

std::string Model(const std::string& name) {
  return std::string(SHARDRUN_SHARED_DIR) + "/models/" + name;
}

// The members of a group in threads: each deposits its partial, all wait, each adds all of
// them in rank order, all wait again before the slots are reused.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : partials_(size), barrier_(size) {}

  class Member : public PartialSumReducer {
   public:
    Member(ThreadGroup* group, int rank) : group_(group), rank_(rank) {}
    absl::Status AllReduce(ReductionPoint, std::span<float> values) override {
      group_->partials_[rank_].assign(values.begin(), values.end());
      group_->barrier_.arrive_and_wait();
      for (size_t i = 0; i < values.size(); ++i) {
        float sum = group_->partials_[0][i];
        for (size_t r = 1; r < group_->partials_.size(); ++r) sum += group_->partials_[r][i];
        values[i] = sum;
      }
      group_->barrier_.arrive_and_wait();
      return absl::OkStatus();
    }

   private:
    ThreadGroup* group_;
    int rank_;
  };

 private:
  std::vector<std::vector<float>> partials_;
  std::barrier<> barrier_;
};

// A whole model as a tensor-parallel group over `capacities`.
class TensorGroupModel {
 public:
  TensorGroupModel(const ModelFile& model, std::span<const double> capacities, int max_batch)
      : model_(model), group_(static_cast<int>(capacities.size())) {
    const ModelConfig& c = model.config();
    const std::vector<TensorSplit> splits = SplitGroup(ShapeOf(model), capacities);
    for (size_t r = 0; r < splits.size(); ++r) {
      auto backend = CpuBackend::Create(1);
      EXPECT_TRUE(backend.ok());
      backends_.push_back(*std::move(backend));
      members_.push_back(std::make_unique<ThreadGroup::Member>(&group_, static_cast<int>(r)));
      auto stage = StageForward::Create(model, {true, {0, c.n_layers}, true, splits[r]},
                                        *backends_.back(), max_batch, members_.back().get());
      EXPECT_TRUE(stage.ok()) << stage.status();
      auto cache = (*stage)->NewKvCache(256);
      EXPECT_TRUE(cache.ok()) << cache.status();
      stages_.push_back(*std::move(stage));
      caches_.push_back(*std::move(cache));
      vocab_.push_back(splits[r].vocab);
    }
  }

  // Logits of the last of `tokens` at positions pos0..: every member's rows, side by side.
  std::vector<float> Compute(int pos0, std::span<const int32_t> tokens) {
    std::vector<float> logits(model_.config().vocab_size);
    std::vector<absl::Status> status(stages_.size());
    {
      std::vector<std::jthread> threads;
      for (size_t r = 0; r < stages_.size(); ++r) {
        threads.emplace_back([&, r] {
          std::span<float> rows(logits.data() + vocab_[r].begin, vocab_[r].size());
          status[r] = stages_[r]->Forward(caches_[r], pos0, {tokens, {}}, rows);
        });
      }
    }
    for (const absl::Status& s : status) EXPECT_TRUE(s.ok()) << s;
    return logits;
  }

 private:
  const ModelFile& model_;
  ThreadGroup group_;
  std::vector<std::unique_ptr<CpuBackend>> backends_;
  std::vector<std::unique_ptr<ThreadGroup::Member>> members_;
  std::vector<std::unique_ptr<StageForward>> stages_;
  std::vector<KvCache> caches_;
  std::vector<IndexRange> vocab_;
};

int Argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// max |a - b| over the range of b.
double RelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0;
  const auto [lo, hi] = std::minmax_element(b.begin(), b.end());
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::fabs(double{a[i]} - b[i]));
  return diff / std::max(1e-30, double{*hi} - double{*lo});
}

// `tolerance` bounds RelativeDifference at every step. 1e-4 where only the summation order
// differs; models whose matrices see rounded activations (f16 weights: f16 activations; Q4_0 /
// Q8_0: 8-bit blocks, as llama.cpp does) can flip one rounding when an input moves by an ulp,
// which moves a logit by up to ~1e-3 of the range on these random synthetic models.
struct Case {
  std::string model;
  std::vector<double> capacities;
  int steps;
  double tolerance = 1e-4;
};

class TensorSplitTest : public ::testing::TestWithParam<Case> {};

TEST_P(TensorSplitTest, GreedyTokensEqualTheWholeModel) {
  const Case& c = GetParam();
  auto model = ModelFile::Open(Model(c.model));
  ASSERT_TRUE(model.ok()) << model.status();
  auto backend = CpuBackend::Create(1);
  ASSERT_TRUE(backend.ok());
  auto whole = LocalModel::Create(**model, **backend, 8, 256);
  ASSERT_TRUE(whole.ok()) << whole.status();
  TensorGroupModel group(**model, c.capacities, 8);

  // A batched prompt, then greedy decoding, each side feeding its own choice back.
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  std::vector<float> want((*model)->config().vocab_size);
  ASSERT_TRUE((*whole)->Compute(0, prompt, want).ok());
  std::vector<float> got = group.Compute(0, prompt);
  EXPECT_LT(RelativeDifference(got, want), c.tolerance) << "first-step logits";
  int pos = static_cast<int>(prompt.size());
  for (int step = 0; step < c.steps; ++step, ++pos) {
    const int32_t want_token = Argmax(want), got_token = Argmax(got);
    if (got_token != want_token) {
      // Only a near tie may go the other way: the whole model's logits for the two tokens
      // must lie within the tolerance. The sequences part there, so the comparison ends.
      const auto [lo, hi] = std::minmax_element(want.begin(), want.end());
      ASSERT_LT(want[want_token] - want[got_token], c.tolerance * (*hi - *lo))
          << "step " << step << ": " << got_token << " instead of " << want_token;
      std::printf("step %d: a near tie went the other way; compared %d steps\n", step, step);
      break;
    }
    ASSERT_TRUE((*whole)->Compute(pos, {&want_token, 1}, want).ok());
    got = group.Compute(pos, {&got_token, 1});
    ASSERT_LT(RelativeDifference(got, want), c.tolerance) << "step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(Groups, TensorSplitTest,
                         ::testing::Values(Case{"stories260K.bin", {1, 1}, 250},
                                           Case{"stories260K.bin", {1, 1, 1}, 250},
                                           Case{"stories260K.bin", {1, 1, 1, 1}, 250},
                                           Case{"stories260K.bin", {3, 1, 2}, 100},
                                           Case{"stories260K-q8_0.gguf", {1, 1, 1}, 100},
                                           Case{"mini-q8_0.gguf", {1, 1}, 60, 5e-3},
                                           Case{"mini-q4_0.gguf", {2, 1, 1}, 60, 5e-3},
                                           Case{"mini-f16.gguf", {1, 1, 1, 1}, 60, 5e-3}),
                         [](const auto& info) {
                           // StrCat: gcc 12 sees a false -Wrestrict in `"_" + to_string`.
                           std::string name =
                               absl::StrCat(info.param.model, "_", info.param.capacities.size());
                           for (double c : info.param.capacities)
                             absl::StrAppend(&name, "_", static_cast<int>(c));
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

TEST(TensorSplitCutTest, ColumnsKeepQuantizationBlocksWhole) {
  auto model = ModelFile::Open(Model("mini-q8_0.gguf"));
  ASSERT_TRUE(model.ok());
  const TensorView* down = (*model)->Find("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  std::vector<uint8_t> storage;
  EXPECT_TRUE(ColumnSlice(*down, 32, 96, storage).ok());
  EXPECT_EQ(storage.size(), TensorBytes(down->type, 64) * down->rows());
  EXPECT_FALSE(ColumnSlice(*down, 16, 96, storage).ok());  // inside a block
  EXPECT_FALSE(ColumnSlice(*down, 0, down->cols() + 32, storage).ok());
  EXPECT_FALSE(RowSlice(*down, 5, 4).ok());

  const ModelShape shape = ShapeOf(**model);
  EXPECT_EQ(shape.ffn_column_unit, 32);
  // 8 query heads of 32 columns over 2 KV heads: one KV head is 128 columns, a whole block.
  EXPECT_EQ(shape.kv_head_unit, 1);
}

TEST(TensorSplitCutTest, SplitsAreProportionalAndCoverEverything) {
  const std::vector<double> capacities = {2, 1, 1};
  const std::vector<IndexRange> r = ProportionalRanges(768, 32, capacities);
  EXPECT_EQ(r[0].begin, 0);
  EXPECT_EQ(r[0].size(), 384);
  EXPECT_EQ(r[1].size(), 192);
  EXPECT_EQ(r[2].end, 768);
  // 172 columns in units of 32: the last unit is short.
  const std::vector<IndexRange> odd = ProportionalRanges(172, 32, capacities);
  EXPECT_EQ(odd.back().end, 172);
  EXPECT_EQ(odd[1].begin % 32, 0);
  // More workers than units: some get nothing, ranges stay contiguous.
  const std::vector<double> four = {1, 1, 1, 1};
  const std::vector<IndexRange> two_units = ProportionalRanges(4, 2, four);
  int covered = 0;
  for (const IndexRange& x : two_units) covered += x.size();
  EXPECT_EQ(covered, 4);
}

}  // namespace
}  // namespace shardrun
