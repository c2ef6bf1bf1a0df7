// The partitioner places a worker's layers and experts only inside its permission token's
// scope (WorkerBudget::scope), and says so when the scopes leave no plan.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth/scope.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/model_config.h"
#include "partitioner/model_shape.h"
#include "partitioner/partitioner.h"
#include "partitioner/shard_plan.h"
#include "tests/stories_config.h"

namespace shardrun {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kGiB = int64_t{1} << 30;

WorkerBudget Worker(const std::string& id, const std::string& scope = "") {
  WorkerBudget w;
  w.worker_id = id;
  w.host = "host-" + id;
  w.memory_bytes = kGiB;
  w.threads = 1;
  if (!scope.empty()) w.scope = *auth::ParseScope(scope);
  return w;
}

// stories260K's shape (5 layers), dense or with `experts` experts per layer.
ModelShape Shape(int experts = 0) {
  ModelConfig c = ::shardrun::testing::StoriesConfig();
  c.n_experts = experts;
  c.n_experts_used = experts > 0 ? 2 : 0;
  return ShapeOf(c, experts > 0 ? TensorType::kQ8_0 : TensorType::kF32);
}

PlanOptions Options(PartitionKind kind) {
  PlanOptions o;
  o.kind = kind;
  o.max_batch = 8;
  return o;
}

// The layers each worker holds, by worker id.
std::map<std::string, std::pair<int, int>> LayersOf(const ShardPlan& plan) {
  std::map<std::string, std::pair<int, int>> layers;
  for (const ShardAssignment& a : plan.assignments) {
    layers[plan.workers[a.worker].worker_id] = {a.slice.layers.begin, a.slice.layers.end};
  }
  return layers;
}

TEST(ScopePlanTest, LayerPlanKeepsAScopedWorkerInsideItsLayers) {
  for (PartitionKind kind : {PartitionKind::kLayer, PartitionKind::kPipeline}) {
    auto plan = MakePlan(Shape(), std::vector{Worker("owner"), Worker("guest", "layers=3-4")},
                         Options(kind));
    ASSERT_TRUE(plan.ok()) << plan.status();
    const auto layers = LayersOf(*plan);
    ASSERT_TRUE(layers.contains("guest"));
    EXPECT_GE(layers.at("guest").first, 3);
    EXPECT_EQ(layers.at("guest").second, 5);
    EXPECT_EQ(layers.at("owner").first, 0);
  }
}

TEST(ScopePlanTest, AScopeThatOnlyFitsElsewhereMakesTheWorkerASpare) {
  // The guest comes first but may hold only layer 4: stages follow the workers' order, so
  // the owner holds everything and the guest nothing.
  auto plan = MakePlan(Shape(), std::vector{Worker("guest", "layers=4"), Worker("owner")},
                       Options(PartitionKind::kLayer));
  ASSERT_TRUE(plan.ok()) << plan.status();
  const auto layers = LayersOf(*plan);
  EXPECT_FALSE(layers.contains("guest"));
  EXPECT_EQ(layers.at("owner"), std::make_pair(0, 5));
}

TEST(ScopePlanTest, ScopesThatLeaveALayerUnheldAreNamed) {
  auto plan = MakePlan(Shape(), std::vector{Worker("a", "layers=0-1"), Worker("b", "layers=3-4")},
                       Options(PartitionKind::kLayer));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("token scopes"));
  EXPECT_THAT(plan.status().message(), HasSubstr("a may hold only layers=0-1"));
}

TEST(ScopePlanTest, MoeLayersNeedEveryExpertInScope) {
  // Layer plans hold a MoE layer with all its experts: experts=0-3 of 8 holds none of them.
  EXPECT_FALSE(ScopeAllowsSlice(*auth::ParseScope("layers=0-4;experts=0-3"),
                                ModelSlice(false, {0, 1}, false), 8));
  EXPECT_TRUE(ScopeAllowsSlice(*auth::ParseScope("layers=0-4;experts=0-7"),
                               ModelSlice(false, {0, 1}, false), 8));
  ModelSlice without_experts(false, {0, 1}, false);
  without_experts.experts = false;
  EXPECT_TRUE(ScopeAllowsSlice(*auth::ParseScope("layers=0-4;experts=0-3"), without_experts, 8));
  auto plan = MakePlan(Shape(8), std::vector{Worker("owner"), Worker("guest", "experts=0-3")},
                       Options(PartitionKind::kLayer));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(LayersOf(*plan).contains("guest"));
}

TEST(ScopePlanTest, ExpertPlanPlacesExpertsOnlyWhereTheScopeAllows) {
  auto plan = MakePlan(Shape(8), std::vector{Worker("owner"), Worker("guest", "experts=0-3")},
                       Options(PartitionKind::kExpert));
  ASSERT_TRUE(plan.ok()) << plan.status();
  int guest_experts = 0;
  for (const ShardAssignment& a : plan->assignments) {
    if (plan->workers[a.worker].worker_id != "guest") continue;
    EXPECT_EQ(a.slice.layers.size(), 0) << "an experts-only scope holds no layer bodies";
    for (const ExpertRef& e : a.experts) {
      EXPECT_LT(e.expert, 4);
      ++guest_experts;
    }
  }
  EXPECT_GT(guest_experts, 0);
}

TEST(ScopePlanTest, TensorPlansOutsideAScopeAreRefused) {
  auto plan = MakePlan(Shape(), std::vector{Worker("owner"), Worker("guest", "layers=3-4")},
                       Options(PartitionKind::kTensor));
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(plan.status().message(), HasSubstr("does not respect the workers' token scopes"));
}

}  // namespace
}  // namespace shardrun
