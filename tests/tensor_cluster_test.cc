// Tensor-parallel runs across real worker processes: every stage's layers split by KV heads
// and FFN columns over a group of workers that add their partial sums over ZeroMQ. Greedy
// tokens and text equal the single-process run (the logits themselves are compared in
// tensor_split_test, where both sides are at hand).
#include <algorithm>
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

std::vector<std::string> GenerationArgs(const std::string& model) {
  std::vector<std::string> args = {SharedPath("models/" + model),
                                   "-p",
                                   "Once upon a time",
                                   "--temp",
                                   "0",
                                   "-n",
                                   "256",
                                   "--ignore-eos",
                                   "--emit-ids"};
  // llama2.c files keep their vocabulary in a separate file.
  if (model.ends_with(".bin")) args.insert(args.end(), {"-z", SharedPath("models/tok512.bin")});
  return args;
}

struct TensorCase {
  std::string model;
  std::vector<std::string> flags;  // after --type tensor
  int workers;
  friend void PrintTo(const TensorCase& c, std::ostream* os) {
    *os << c.model << " " << absl::StrJoin(c.flags, " ");
  }
};

class TensorClusterTest : public ::testing::TestWithParam<TensorCase> {};

TEST_P(TensorClusterTest, EqualsSingleProcess) {
  const TensorCase& c = GetParam();
  std::vector<std::string> single = {"generate", "-t", "1"};
  for (const std::string& a : GenerationArgs(c.model)) single.push_back(a);
  const CommandResult want = RunShardrun(single);
  ASSERT_EQ(want.exit_code, 0) << want.err;

  std::vector<std::string> args = {"--type", "tensor"};
  args.insert(args.end(), c.flags.begin(), c.flags.end());
  for (const std::string& a : GenerationArgs(c.model)) args.push_back(a);
  const CommandResult got = RunShardrun(args);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  const std::vector<int> want_ids = IdsAfter(want.err, "generated_ids");
  ASSERT_EQ(want_ids.size(), 256u);
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","), absl::StrJoin(want_ids, ","));
  EXPECT_EQ(got.out, want.out);
  // The plan split the layers, the group reported its reductions, and nobody outlived the run.
  EXPECT_NE(got.err.find("tensor plan"), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("tensor-parallel group of"), std::string::npos) << got.err;
  // The partial sums go by link (shared memory on one host, or TCP), unless told not to.
  const bool links = std::find(c.flags.begin(), c.flags.end(), "none") == c.flags.end();
  EXPECT_EQ(got.err.find("partial sums taken by link") != std::string::npos, links) << got.err;
  const std::vector<int> pids = RegisteredWorkerPids(got.err);
  ASSERT_EQ(pids.size(), static_cast<size_t>(c.workers)) << got.err;
  EXPECT_EQ(std::set<int>(pids.begin(), pids.end()).size(), pids.size());
  for (int pid : pids) EXPECT_FALSE(ProcessAlive(pid)) << "worker pid " << pid;
}

INSTANTIATE_TEST_SUITE_P(
    Groups, TensorClusterTest,
    ::testing::Values(
        TensorCase{"stories260K.bin", {"--shards", "2"}, 2},
        TensorCase{"stories260K.bin", {"--shards", "3"}, 3},
        TensorCase{"stories260K.bin", {"--shards", "4"}, 4},
        // Two stages of two: tensor parallelism inside each stage, layers between them.
        TensorCase{"stories260K.bin", {"--shards", "4", "--tp", "2"}, 4},
        TensorCase{
            "stories260K.bin",
            {"--shards", "3", "--reduction", "gather-broadcast", "--worker-threads", "2,1,1"},
            3},
        // Q8_0 matrices: KV heads go in pairs (two heads are one block of attn_output).
        TensorCase{"stories260K-q8_0.gguf", {"--shards", "3", "--worker-threads", "1,2,1"}, 3},
        // Partial sums by TCP link (as between hosts).
        TensorCase{"stories260K.bin", {"--shards", "3", "--links", "tcp"}, 3},
        // Everything by socket (proto/link.h off), both reduction paths.
        TensorCase{"stories260K.bin", {"--shards", "3", "--links", "none"}, 3},
        TensorCase{
            "stories260K.bin",
            {"--shards", "4", "--tp", "2", "--reduction", "gather-broadcast", "--links", "none"},
            4}),
    [](const auto& info) { return absl::StrCat("case_", info.index); });

TEST(TensorClusterErrorsTest, UnsupportedCombinationsAreClearErrors) {
  const std::string model = SharedPath("models/stories260K.bin");
  CommandResult r =
      RunShardrun({"--shards", "4", "--type", "tensor", "--tp", "3", "--plan", model});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--tp 3 does not divide 4 workers"), std::string::npos) << r.err;
  r = RunShardrun({"--shards", "2", "--type", "layer", "--tp", "2", "--plan", model});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--tp needs --type tensor"), std::string::npos) << r.err;
  r = RunShardrun(
      {"--shards", "2", "--type", "tensor", "--plan", SharedPath("models/moe-mini-q8_0.gguf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("use --type expert"), std::string::npos) << r.err;
  r = RunShardrun(
      {"--shards", "2", "--type", "tensor", "--plan", SharedPath("models/stories260K-v2-gs4.bin")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot cut llama2.c int8"), std::string::npos) << r.err;
  r = RunShardrun({"--shards", "2", "--type", "tensor", "--worker-mem", "200K", "--plan", model});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("short by"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace shardrun
