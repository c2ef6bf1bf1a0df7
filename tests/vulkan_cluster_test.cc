// A sharded run with a mix of CPU and Vulkan workers (lavapipe in CI) equals the single-process
// CPU run: the Vulkan kernels keep stories260K's greedy tokens (see vulkan_backend_test).
// A Vulkan worker whose GPU fails mid-run or cannot allocate its shard (injected through the
// real Vulkan error path) leaves the cluster, and recovery moves its shard: the answer is
// unchanged.
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace shardrun {
namespace {

using ::shardrun::testing::CommandResult;
using ::shardrun::testing::IdsAfter;
using ::shardrun::testing::ProcessAlive;
using ::shardrun::testing::RegisteredWorkerPids;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;

std::vector<std::string> Generation() {
  const std::string model = SharedPath("models/stories260K.bin");
  const std::string vocab = SharedPath("models/tok512.bin");
  return {model, "-z", vocab, "-p", "Once upon a time", "--temp", "0", "-n", "48", "--emit-ids"};
}

// The single-process CPU run's greedy ids.
std::string CpuIds() {
  std::vector<std::string> args = {"generate", "-t", "1", "--backend", "cpu"};
  for (const std::string& a : Generation()) args.push_back(a);
  const CommandResult r = RunShardrun(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return absl::StrJoin(IdsAfter(r.err, "generated_ids"), ",");
}

TEST(VulkanClusterTest, MixedCpuAndVulkanWorkersEqualSingleProcessCpu) {
  const CommandResult devices = RunShardrun({"devices"});
  if (devices.exit_code != 0) GTEST_SKIP() << "no Vulkan device: " << devices.err;
  const std::string want = CpuIds();
  for (const char* type : {"layer", "tensor"}) {
    std::vector<std::string> args = {"--shards", "2", "--type", type};
    args.insert(args.end(), {"--worker-backend", "cpu,vulkan"});
    for (const std::string& a : Generation()) args.push_back(a);
    const CommandResult got = RunShardrun(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","), want) << type;
    EXPECT_NE(got.err.find("vulkan"), std::string::npos) << got.err;  // the plan's backend column
  }
}

// w1, the Vulkan worker, fails as `fault` says; the spare w2 (CPU) takes its shard over.
void ExpectGpuFailureRecovered(const std::string& type, const std::string& fault,
                               const std::string& vk_error, const std::string& want) {
  SCOPED_TRACE(absl::StrCat("--type ", type, " --inject w1:", fault));
  // The Vulkan workers run with the validation layer (when installed): a failing device must
  // not make the backend break a valid-usage rule on its way out.
  setenv("SHARDRUN_VK_VALIDATION", "1", 1);
  std::vector<std::string> args = {"--shards", "2", "--type", type, "--spares", "1"};
  args.insert(args.end(), {"--inject", "w1:" + fault, "--worker-backend", "cpu,vulkan,cpu"});
  for (const std::string& a : Generation()) args.push_back(a);
  const CommandResult got = RunShardrun(args);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","), want) << got.err;
  // The coordinator says why w1 left; w1 says it failed; the shard moved.
  EXPECT_NE(got.err.find("worker w1 is leaving: GPU "), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("failed: Vulkan: "), std::string::npos) << got.err;
  EXPECT_NE(got.err.find(vk_error), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("left the cluster"), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("worker w1 declared dead"), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("recovered in"), std::string::npos) << got.err;
  EXPECT_EQ(got.err.find("Vulkan validation: "), std::string::npos) << got.err;
  for (int pid : RegisteredWorkerPids(got.err)) {
    EXPECT_FALSE(ProcessAlive(pid)) << "worker pid " << pid << " outlived the run";
  }
}

TEST(VulkanClusterTest, GpuLostMidRunMovesTheShard) {
  const CommandResult devices = RunShardrun({"devices"});
  if (devices.exit_code != 0) GTEST_SKIP() << "no Vulkan device: " << devices.err;
  const std::string want = CpuIds();
  for (const char* type : {"layer", "tensor"}) {
    ExpectGpuFailureRecovered(type, "gpu-lost@step=6", "VK_ERROR_DEVICE_LOST", want);
  }
}

TEST(VulkanClusterTest, GpuOutOfMemoryWhileLoadingMovesTheShard) {
  const CommandResult devices = RunShardrun({"devices"});
  if (devices.exit_code != 0) GTEST_SKIP() << "no Vulkan device: " << devices.err;
  const std::string want = CpuIds();
  for (const char* type : {"layer", "tensor"}) {
    ExpectGpuFailureRecovered(type, "gpu-oom@load", "VK_ERROR_OUT_OF_DEVICE_MEMORY", want);
  }
}

// A Vulkan worker whose device never comes up (here: no driver at all) leaves like one whose
// device failed later, and its shard moves to the CPU worker.
TEST(VulkanClusterTest, GpuThatCannotStartMovesTheShard) {
  const CommandResult devices = RunShardrun({"devices"});
  if (devices.exit_code != 0) GTEST_SKIP() << "no Vulkan device: " << devices.err;
  const std::string want = CpuIds();
  setenv("VK_ICD_FILENAMES", "/nonexistent/shardrun-test-icd.json", 1);
  std::vector<std::string> args = {"--shards", "2", "--worker-backend", "cpu,vulkan"};
  for (const std::string& a : Generation()) args.push_back(a);
  const CommandResult got = RunShardrun(args);
  unsetenv("VK_ICD_FILENAMES");
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","), want) << got.err;
  EXPECT_NE(got.err.find("worker w1 is leaving: GPU failed: Vulkan: vkCreateInstance failed"),
            std::string::npos)
      << got.err;
  EXPECT_NE(got.err.find("recovered in"), std::string::npos) << got.err;
}

// A Vulkan worker whose device fails while it serves another worker's expert request leaves
// (it does not wait for a step of its own to fail), and the experts move to the spare.
TEST(VulkanClusterTest, GpuLostWhileServingExpertsMovesTheExperts) {
  const CommandResult devices = RunShardrun({"devices"});
  if (devices.exit_code != 0) GTEST_SKIP() << "no Vulkan device: " << devices.err;
  const std::vector<std::string> generation = {SharedPath("models/moe-mini-q8_0.gguf"),
                                               "--prompt-ids",
                                               "1,2,3,4",
                                               "-n",
                                               "24",
                                               "--temp",
                                               "0",
                                               "--emit-ids"};
  std::vector<std::string> single = {"generate", "-t", "1", "--backend", "cpu"};
  single.insert(single.end(), generation.begin(), generation.end());
  const CommandResult want = RunShardrun(single);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  std::vector<std::string> args = {"--shards",         "2",
                                   "--type",           "expert",
                                   "--spares",         "1",
                                   "--inject",         "w1:gpu-lost@serve=5",
                                   "--worker-backend", "cpu,vulkan,cpu"};
  args.insert(args.end(), generation.begin(), generation.end());
  const CommandResult got = RunShardrun(args);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","),
            absl::StrJoin(IdsAfter(want.err, "generated_ids"), ","));
  EXPECT_NE(got.err.find("injected GPU loss before expert request 5"), std::string::npos)
      << got.err;
  EXPECT_NE(got.err.find("worker w1 is leaving: GPU "), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("VK_ERROR_DEVICE_LOST"), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("recovered in"), std::string::npos) << got.err;
}

// A GPU fault aimed at a worker without a GPU is refused before the worker connects.
TEST(VulkanClusterTest, GpuFaultOnCpuWorkerIsAnError) {
  const CommandResult r = RunShardrun({"worker", "--connect", "tcp://127.0.0.1:9", "--backend",
                                       "cpu", "--inject", "gpu-lost@step=3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("a GPU fault needs a Vulkan worker (--backend vulkan)"), std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace shardrun
