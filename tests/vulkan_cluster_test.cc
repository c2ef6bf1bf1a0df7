// A sharded run with a mix of CPU and Vulkan workers (lavapipe in CI) equals the single-process
// CPU run: the Vulkan kernels keep stories260K's greedy tokens (see vulkan_backend_test).
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace shardrun {
namespace {

using ::shardrun::testing::CommandResult;
using ::shardrun::testing::IdsAfter;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;

TEST(VulkanClusterTest, MixedCpuAndVulkanWorkersEqualSingleProcessCpu) {
  const CommandResult devices = RunShardrun({"devices"});
  if (devices.exit_code != 0) GTEST_SKIP() << "no Vulkan device: " << devices.err;
  const std::vector<std::string> common = {SharedPath("models/stories260K.bin"), "-z",
                                           SharedPath("models/tok512.bin"), "-p",
                                           "Once upon a time", "--temp", "0", "-n", "48",
                                           "--emit-ids"};
  std::vector<std::string> single = {"generate", "-t", "1", "--backend", "cpu"};
  single.insert(single.end(), common.begin(), common.end());
  const CommandResult want = RunShardrun(single);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (const char* type : {"layer", "tensor"}) {
    std::vector<std::string> args = {"--shards", "2", "--type", type, "--worker-backend",
                                     "cpu,vulkan"};
    args.insert(args.end(), common.begin(), common.end());
    const CommandResult got = RunShardrun(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","),
              absl::StrJoin(IdsAfter(want.err, "generated_ids"), ","))
        << type;
    EXPECT_NE(got.err.find("vulkan"), std::string::npos) << got.err;  // the plan's backend column
  }
}

}  // namespace
}  // namespace shardrun
