// Sharded runs across real worker processes equal the single-process run exactly.
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
using ::shardrun::testing::ProcessAlive;
using ::shardrun::testing::RegisteredWorkerPids;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;

std::vector<std::string> GenerationArgs() {
  return {SharedPath("models/stories260K.bin"), "-z", SharedPath("models/tok512.bin"), "-p",
          "Once upon a time", "--temp", "0", "-n", "200", "--emit-ids"};
}

CommandResult SingleProcess() {
  std::vector<std::string> args = {"generate"};
  for (const std::string& a : GenerationArgs()) args.push_back(a);
  args.insert(args.end(), {"-t", "1"});
  return RunShardrun(args);
}

struct ClusterCase {
  int shards;
  std::string memory;   // --worker-mem
  std::string threads;  // --worker-threads
  friend void PrintTo(const ClusterCase& c, std::ostream* os) {
    *os << c.shards << " shards, mem " << c.memory << ", threads " << c.threads;
  }
};

class LayerClusterTest : public ::testing::TestWithParam<ClusterCase> {};

TEST_P(LayerClusterTest, EqualsSingleProcess) {
  const ClusterCase& c = GetParam();
  const CommandResult want = SingleProcess();
  ASSERT_EQ(want.exit_code, 0) << want.err;
  std::vector<std::string> args = {"--shards", std::to_string(c.shards), "--type", "layer",
                                   "--worker-mem", c.memory, "--worker-threads", c.threads};
  for (const std::string& a : GenerationArgs()) args.push_back(a);
  const CommandResult got = RunShardrun(args);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","),
            absl::StrJoin(IdsAfter(want.err, "generated_ids"), ","));
  // Real, separate processes, all gone afterwards.
  const std::vector<int> pids = RegisteredWorkerPids(got.err);
  ASSERT_EQ(pids.size(), static_cast<size_t>(c.shards)) << got.err;
  EXPECT_EQ(std::set<int>(pids.begin(), pids.end()).size(), pids.size());
  for (int pid : pids) {
    EXPECT_NE(pid, getpid());
    EXPECT_FALSE(ProcessAlive(pid)) << "worker pid " << pid << " outlived the run";
  }
  EXPECT_NE(got.err.find("stage 0"), std::string::npos) << got.err;
}

INSTANTIATE_TEST_SUITE_P(
    Shards, LayerClusterTest,
    ::testing::Values(ClusterCase{1, "64M", "1"}, ClusterCase{2, "64M", "1"},
                      ClusterCase{3, "64M", "1"}, ClusterCase{4, "64M", "1"},
                      ClusterCase{5, "64M", "1"}, ClusterCase{3, "64M,32M,16M", "2,1,1"},
                      ClusterCase{4, "16M", "1,3,1,1"}),
    [](const auto& info) {
      return absl::StrCat(info.param.shards, "_shards_", info.index);
    });

TEST(ClusterTest, PlanPrintsEveryWorkerAndExits) {
  const CommandResult r = RunShardrun({"--shards", "3", "--plan", SharedPath("models/stories260K.bin"),
                                       "-z", SharedPath("models/tok512.bin")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* id : {"w0", "w1", "w2"}) EXPECT_NE(r.out.find(id), std::string::npos) << r.out;
  for (int pid : RegisteredWorkerPids(r.err)) EXPECT_FALSE(ProcessAlive(pid));
}

TEST(ClusterTest, ModelTooBigForTheBudgetsNamesTheShortfall) {
  const CommandResult r = RunShardrun({"--shards", "2", "--worker-mem", "100K",
                                       SharedPath("models/stories260K.bin"), "-z",
                                       SharedPath("models/tok512.bin"), "-n", "4"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("w0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("w1"), std::string::npos) << r.err;
  for (int pid : RegisteredWorkerPids(r.err)) EXPECT_FALSE(ProcessAlive(pid));
}

}  // namespace
}  // namespace shardrun
