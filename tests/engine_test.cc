// The forward pass in-process: batched prefill and any split of the model into slices give
// bit-identical results to the whole model run token by token; the sampler's options.
#include <memory>
#include <vector>

#include "engine/expert_bank.h"
#include "engine/generator.h"
#include "engine/local_model.h"
#include "engine/sampler.h"
#include "engine/stage_forward.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/model_file.h"

namespace shardrun {
namespace {

std::string Model(const std::string& name) {
  return std::string(SHARDRUN_SHARED_DIR) + "/models/" + name;
}

const std::vector<int32_t> kTokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};

// Logits after each prefix of kTokens, feeding one token at a time through the whole model.
std::vector<std::vector<float>> TokenByToken(const ModelFile& model, Backend& backend) {
  auto local = LocalModel::Create(model, backend, /*max_batch=*/1, /*context_length=*/64);
  EXPECT_TRUE(local.ok()) << local.status();
  std::vector<std::vector<float>> all;
  for (size_t i = 0; i < kTokens.size(); ++i) {
    std::vector<float> logits(model.config().vocab_size);
    EXPECT_TRUE((*local)->Compute(static_cast<int>(i), {&kTokens[i], 1}, logits).ok());
    all.push_back(logits);
  }
  return all;
}

class EngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = ModelFile::Open(Model(GetParam()));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    auto backend = CpuBackend::Create(2);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
  }
  std::unique_ptr<ModelFile> model_;
  std::unique_ptr<CpuBackend> backend_;
};

TEST_P(EngineTest, BatchedPrefillEqualsTokenByToken) {
  const auto want = TokenByToken(*model_, *backend_);
  for (int batch : {2, 5, 12}) {
    auto local = LocalModel::Create(*model_, *backend_, batch, 64);
    ASSERT_TRUE(local.ok()) << local.status();
    std::vector<float> logits(model_->config().vocab_size);
    int pos = 0;
    while (pos < static_cast<int>(kTokens.size())) {
      const int n = std::min<int>(batch, static_cast<int>(kTokens.size()) - pos);
      ASSERT_TRUE(
          (*local)->Compute(pos, std::span<const int32_t>(kTokens).subspan(pos, n), logits).ok());
      pos += n;
      EXPECT_EQ(logits, want[pos - 1]) << "batch " << batch << " after " << pos << " tokens";
    }
  }
}

// Runs kTokens through a chain of slices, passing hidden states, token by token and batched.
std::vector<float> RunChain(const ModelFile& model, Backend& backend,
                            const std::vector<ModelSlice>& slices, int batch) {
  std::vector<std::unique_ptr<StageForward>> stages;
  std::vector<KvCache> caches;
  for (const ModelSlice& s : slices) {
    auto stage = StageForward::Create(model, s, backend, batch);
    EXPECT_TRUE(stage.ok()) << stage.status();
    auto cache = (*stage)->NewKvCache(64);
    EXPECT_TRUE(cache.ok());
    stages.push_back(*std::move(stage));
    caches.push_back(*std::move(cache));
  }
  std::vector<float> data, next;
  int pos = 0;
  while (pos < static_cast<int>(kTokens.size())) {
    const int n = std::min<int>(batch, static_cast<int>(kTokens.size()) - pos);
    for (size_t i = 0; i < stages.size(); ++i) {
      StageInput in;
      if (i == 0) {
        in.tokens = std::span<const int32_t>(kTokens).subspan(pos, n);
      } else {
        in.hidden = data;
      }
      next.assign(stages[i]->OutputSize(n), 0.0f);
      EXPECT_TRUE(stages[i]->Forward(caches[i], pos, in, next).ok());
      data.swap(next);
    }
    pos += n;
  }
  return data;
}

TEST_P(EngineTest, AnySplitIntoSlicesEqualsWholeModel) {
  const auto want = TokenByToken(*model_, *backend_).back();
  const int layers = model_->config().n_layers;
  // Embedding alone, every layer boundary, head alone.
  for (int cut = 0; cut <= layers; ++cut) {
    const std::vector<ModelSlice> two = {{true, {0, cut}, false}, {false, {cut, layers}, true}};
    EXPECT_EQ(RunChain(*model_, *backend_, two, 1), want) << "cut at " << cut;
    EXPECT_EQ(RunChain(*model_, *backend_, two, 4), want) << "cut at " << cut << ", batch 4";
  }
  std::vector<ModelSlice> one_per_layer = {{true, {0, 0}, false}};
  for (int l = 0; l < layers; ++l) one_per_layer.push_back({false, {l, l + 1}, false});
  one_per_layer.push_back({false, {layers, layers}, true});
  EXPECT_EQ(RunChain(*model_, *backend_, one_per_layer, 3), want);
}

// Experts run by a dispatcher (as under --type expert, where they live on other workers) give
// bit-identical logits: the outputs come back unrounded and are added in the same order.
TEST(EngineExpertTest, DispatchedExpertsEqualLocalExperts) {
  for (const char* name : {"moe-mini-q8_0.gguf", "moe-mini-f32.gguf"}) {
    auto model = ModelFile::Open(Model(name));
    ASSERT_TRUE(model.ok()) << model.status();
    auto backend = CpuBackend::Create(1);
    ASSERT_TRUE(backend.ok());
    const std::vector<std::vector<float>> want = TokenByToken(**model, **backend);
    const ModelConfig& c = (*model)->config();
    std::vector<std::pair<int, int>> all;
    for (int l = 0; l < c.n_layers; ++l) {
      for (int e = 0; e < c.n_experts; ++e) all.push_back({l, e});
    }
    auto bank = ExpertBank::Load(**model, all, **backend);
    ASSERT_TRUE(bank.ok()) << bank.status();
    ModelSlice slice = ModelSlice::Whole(c);
    slice.experts = false;
    for (int batch : {1, 5}) {
      auto stage = StageForward::Create(**model, slice, **backend, batch);
      ASSERT_TRUE(stage.ok()) << stage.status();
      (*stage)->set_expert_dispatcher(bank->get());
      auto cache = (*stage)->NewKvCache(64);
      ASSERT_TRUE(cache.ok());
      std::vector<float> logits(c.vocab_size);
      for (size_t pos = 0; pos < kTokens.size(); pos += batch) {
        const size_t n = std::min<size_t>(batch, kTokens.size() - pos);
        ASSERT_TRUE((*stage)
                        ->Forward(*cache, static_cast<int>(pos),
                                  {std::span<const int32_t>(kTokens).subspan(pos, n), {}}, logits)
                        .ok());
        EXPECT_EQ(logits, want[pos + n - 1]) << name << " batch " << batch << " pos " << pos;
      }
    }
    EXPECT_FALSE((*bank)->calls().empty());
  }
}

TEST_P(EngineTest, RejectsBadInput) {
  auto local = LocalModel::Create(*model_, *backend_, 4, 8);
  ASSERT_TRUE(local.ok());
  std::vector<float> logits(model_->config().vocab_size);
  const int32_t bad = model_->config().vocab_size;
  EXPECT_FALSE((*local)->Compute(0, {&bad, 1}, logits).ok());
  const int32_t good = 1;
  EXPECT_FALSE((*local)->Compute(8, {&good, 1}, logits).ok());  // past the context
  const std::vector<int32_t> five(5, 1);
  EXPECT_FALSE((*local)->Compute(0, five, logits).ok());  // over the batch limit
  EXPECT_FALSE(StageForward::Create(*model_, {true, {0, 99}, true}, *backend_, 1).ok());
}

INSTANTIATE_TEST_SUITE_P(Models, EngineTest,
                         ::testing::Values("stories260K.bin", "stories260K-q8_0.gguf",
                                           "stories260K-v2-gs4.bin", "mini-f16.gguf",
                                           "mini-q4_0.gguf", "moe-mini-q8_0.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST(SamplerTest, GreedyTakesFirstMaximum) {
  Sampler sampler(4, SamplerOptions{});
  std::vector<float> logits = {1, 3, 3, 2};
  EXPECT_EQ(sampler.Sample(logits, {}), 1);
}

TEST(SamplerTest, TopKOneIsGreedyAtAnyTemperature) {
  SamplerOptions options;
  options.temperature = 1.5f;
  options.top_k = 1;
  options.seed = 5;
  Sampler sampler(5, options);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.25f, 0.0f};
    EXPECT_EQ(sampler.Sample(logits, {}), 2);
  }
}

TEST(SamplerTest, RepeatPenaltyMovesAwayFromRecentTokens) {
  SamplerOptions options;
  options.repeat_penalty = 2.0f;
  Sampler sampler(3, options);
  std::vector<float> logits = {1.0f, 1.5f, 0.9f};
  const std::vector<int32_t> history = {1, 1, 1};
  EXPECT_EQ(sampler.Sample(logits, history), 0);  // 1.5 / 2 = 0.75 < 1.0
}

TEST(SamplerTest, SamplingFollowsTheDistribution) {
  SamplerOptions options;
  options.temperature = 1.0f;
  options.top_p = 1.0f;  // the whole distribution
  options.seed = 42;
  Sampler sampler(2, options);
  int ones = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<float> logits = {0.0f, std::log(3.0f)};  // p(1) = 0.75
    ones += sampler.Sample(logits, {}) == 1;
  }
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
}

}  // namespace
}  // namespace shardrun
