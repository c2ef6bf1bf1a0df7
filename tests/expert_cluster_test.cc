// Expert-sharded runs (--type expert) across real worker processes: the layers' owners keep
// attention, norms and routers; the experts are spread over every worker and each token's
// hidden state goes only to the holders of its chosen experts. The outputs come back exact
// and are added in the single-process order, so the tokens are identical.
#include <fstream>
#include <set>
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
using ::shardrun::testing::MakeTempDir;
using ::shardrun::testing::ProcessAlive;
using ::shardrun::testing::RegisteredWorkerPids;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;

std::vector<std::string> Generation(const std::string& model) {
  return {model, "--prompt-ids", "1,300,301,302", "-n", "48", "--temp",
          "0",   "--ignore-eos", "--emit-ids"};
}

std::string SingleProcessIds(const std::string& model) {
  std::vector<std::string> args = {"generate", "-t", "1"};
  for (const std::string& a : Generation(model)) args.push_back(a);
  const CommandResult r = RunShardrun(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return absl::StrJoin(IdsAfter(r.err, "generated_ids"), ",");
}

CommandResult ExpertRun(const std::string& model, std::vector<std::string> flags) {
  std::vector<std::string> args = {"--type", "expert"};
  args.insert(args.end(), flags.begin(), flags.end());
  for (const std::string& a : Generation(model)) args.push_back(a);
  return RunShardrun(args);
}

void ExpectNoWorkerLeft(const CommandResult& r, size_t workers) {
  const std::vector<int> pids = RegisteredWorkerPids(r.err);
  ASSERT_EQ(pids.size(), workers) << r.err;
  for (int pid : pids) EXPECT_FALSE(ProcessAlive(pid)) << "worker pid " << pid;
}

TEST(ExpertClusterTest, TwoAndFourShardsEqualSingleProcess) {
  for (const char* name : {"moe-mini-q8_0.gguf", "moe-mini-f32.gguf"}) {
    const std::string model = SharedPath(std::string("models/") + name);
    const std::string want = SingleProcessIds(model);
    ASSERT_FALSE(want.empty());
    // Requests and replies through shared-memory links (the default) and, at 2 shards, by TCP
    // links and by socket only.
    for (const char* shards : {"2", "4", "2 by tcp", "2 by socket"}) {
      std::vector<std::string> flags = {"--shards", std::string(shards).substr(0, 1),
                                        "--worker-threads", "1,2"};
      if (std::string(shards).ends_with("by tcp")) flags.insert(flags.end(), {"--links", "tcp"});
      if (std::string(shards).ends_with("by socket"))
        flags.insert(flags.end(), {"--links", "none"});
      const CommandResult got = ExpertRun(model, flags);
      ASSERT_EQ(got.exit_code, 0) << got.err;
      EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","), want)
          << name << ", " << shards << " shards";
      EXPECT_NE(got.err.find("expert plan"), std::string::npos);
      EXPECT_NE(got.err.find("expert calls served"), std::string::npos) << got.err;
      ExpectNoWorkerLeft(got, std::stoul(flags[1]));
    }
  }
}

// A Mixtral-style model of another shape from `shardrun synth`, placed by router statistics
// (hot experts replicated), in pipeline-free layer order.
TEST(ExpertClusterTest, CalibratedPlacementOfASynthesizedModel) {
  const std::string dir = MakeTempDir();
  const std::string model = dir + "/moe.gguf";
  const CommandResult synth =
      RunShardrun({"synth", "--preset", "mini", "--experts", "6", "--experts-used", "2", "--type",
                   "q8_0", "--layers", "3", "--seed", "7", model});
  ASSERT_EQ(synth.exit_code, 0) << synth.err;
  const std::string want = SingleProcessIds(model);
  const std::string calibration = dir + "/calibration.txt";
  std::ofstream(calibration) << "Once upon a time there was a little dog who liked to run in "
                                "the park and play with the other dogs every day.";
  const CommandResult got = ExpertRun(model, {"--shards", "3", "--calibrate", calibration});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","), want);
  EXPECT_NE(got.err.find("placed by the router load measured on the calibration"),
            std::string::npos)
      << got.err;
  ExpectNoWorkerLeft(got, 3);
}

TEST(ExpertClusterTest, ErrorsAreClear) {
  CommandResult r =
      RunShardrun({"--shards", "2", "--type", "expert", "--plan",
                   SharedPath("models/stories260K.bin"), "-z", SharedPath("models/tok512.bin")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("needs a mixture-of-experts model"), std::string::npos) << r.err;
  // Layers fit, but not every expert besides them.
  r = RunShardrun({"--shards", "2", "--type", "expert", "--worker-mem", "2M", "--plan",
                   SharedPath("models/moe-mini-f32.gguf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("do not fit"), std::string::npos) << r.err;
  r = RunShardrun({"--shards", "2", "--type", "layer", "--calibrate", "/dev/null", "--plan",
                   SharedPath("models/moe-mini-f32.gguf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--calibrate needs --type expert"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace shardrun
