// Sharded runs across real worker processes equal the single-process run exactly.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "zmq.hpp"

namespace shardrun {
namespace {

using ::shardrun::testing::BackgroundShardrun;
using ::shardrun::testing::CommandResult;
using ::shardrun::testing::FreePort;
using ::shardrun::testing::WaitForExit;
using ::shardrun::testing::WaitForFileCondition;
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

class PipelineTest : public ::testing::TestWithParam<std::vector<std::string>> {};

// Four prompts in flight at once through 3 stages: each prompt's output equals its
// single-process output (greedy, and sampled with a fixed seed).
TEST_P(PipelineTest, EachSequenceEqualsItsSingleProcessRun) {
  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Tom went to the park",
                                            "The dog", "The café was über nice"};
  const std::string dir = ::testing::TempDir();
  const std::string prompts_file = dir + "/pipeline_prompts.txt";
  {
    std::ofstream out(prompts_file);
    for (const std::string& p : prompts) out << p << "\n";
  }
  std::vector<std::string> common = {SharedPath("models/stories260K.bin"), "-z",
                                     SharedPath("models/tok512.bin"), "-n", "80"};
  common.insert(common.end(), GetParam().begin(), GetParam().end());
  std::string want;
  for (const std::string& p : prompts) {
    std::vector<std::string> args = {"generate", "-t", "1", "-p", p};
    args.insert(args.end(), common.begin(), common.end());
    const CommandResult r = RunShardrun(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    want += r.out;
  }
  std::vector<std::string> args = {"--shards", "3", "--type", "pipeline", "--parallel", "4",
                                   "--prompts", prompts_file};
  args.insert(args.end(), common.begin(), common.end());
  const CommandResult got = RunShardrun(args);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want);
  EXPECT_NE(got.err.find("aggregate: "), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("sequence 4: "), std::string::npos) << got.err;
  for (int pid : RegisteredWorkerPids(got.err)) EXPECT_FALSE(ProcessAlive(pid));
}

INSTANTIATE_TEST_SUITE_P(Sampling, PipelineTest,
                         ::testing::Values(std::vector<std::string>{"--temp", "0"},
                                           std::vector<std::string>{"--temp", "0.8", "--seed",
                                                                    "42"}),
                         [](const auto& info) { return info.index == 0 ? "greedy" : "sampled"; });

TEST(ClusterTest, CompactActivationsRunAndCountBytes) {
  const CommandResult want = SingleProcess();
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (const auto& [type, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"f16", "128 bytes per token"}, {"q8_0", "68 bytes per token"}}) {
    std::vector<std::string> args = {"--shards", "3", "--act-type", type};
    for (const std::string& a : GenerationArgs()) args.push_back(a);
    const CommandResult got = RunShardrun(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    EXPECT_NE(got.err.find(bytes), std::string::npos) << got.err;
    // Rounded activations change the numbers slightly; the first token is robust here.
    ASSERT_FALSE(IdsAfter(got.err, "generated_ids").empty());
    EXPECT_EQ(IdsAfter(got.err, "generated_ids")[0], IdsAfter(want.err, "generated_ids")[0]);
  }
}

TEST(ClusterTest, ParallelNeedsPipeline) {
  const CommandResult r = RunShardrun({"--shards", "2", "--parallel", "2",
                                       SharedPath("models/stories260K.bin"), "-z",
                                       SharedPath("models/tok512.bin")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--parallel needs --type pipeline"), std::string::npos) << r.err;
}

std::string Endpoint(int port) { return absl::StrCat("tcp://127.0.0.1:", port); }

TEST(ClusterTest, WorkerWithAnotherModelFileIsRefused) {
  const int port = FreePort();
  BackgroundShardrun coordinator({"coordinator", "--listen", Endpoint(port), "--shards", "1",
                                  "--register-timeout", "3",
                                  SharedPath("models/stories260K.bin"), "-z",
                                  SharedPath("models/tok512.bin"), "-n", "4"});
  // Same weights, other file (export.py version 1): another content hash.
  const CommandResult worker =
      RunShardrun({"worker", "--connect", Endpoint(port), "--id", "other", "--model",
                   SharedPath("models/stories260K-v1.bin")});
  EXPECT_EQ(worker.exit_code, 1);
  EXPECT_NE(worker.err.find("refused"), std::string::npos) << worker.err;
  EXPECT_NE(worker.err.find("model file differs"), std::string::npos) << worker.err;
  EXPECT_EQ(coordinator.Wait(30000), 1);
  EXPECT_NE(coordinator.err().find("0 registered"), std::string::npos) << coordinator.err();
}

TEST(ClusterTest, KilledCoordinatorLeavesNoWorkerBehind) {
  const int port = FreePort();
  // The coordinator waits for a third worker that never comes, with two registered.
  BackgroundShardrun coordinator({"coordinator", "--listen", Endpoint(port), "--shards", "3",
                                  "--register-timeout", "60",
                                  SharedPath("models/stories260K.bin"), "-z",
                                  SharedPath("models/tok512.bin")});
  std::vector<std::unique_ptr<BackgroundShardrun>> workers;
  for (const char* id : {"a", "b"}) {
    workers.push_back(std::make_unique<BackgroundShardrun>(std::vector<std::string>{
        "worker", "--connect", Endpoint(port), "--id", id, "--model",
        SharedPath("models/stories260K.bin")}));
  }
  ASSERT_TRUE(WaitForFileCondition(coordinator.err_path(), 30000, [&] {
    return RegisteredWorkerPids(coordinator.err()).size() == 2;
  })) << coordinator.err();
  kill(coordinator.pid(), SIGKILL);
  EXPECT_EQ(coordinator.Wait(10000), 128 + SIGKILL);
  // Workers notice the silence (5 s by default) and exit with a message saying why.
  for (auto& w : workers) {
    EXPECT_EQ(w->Wait(20000), 1) << w->err();
    EXPECT_NE(w->err().find("no word from the coordinator"), std::string::npos) << w->err();
  }
}

TEST(ClusterTest, GarbageOnTheCoordinatorSocketCrashesNothing) {
  const int port = FreePort();
  BackgroundShardrun coordinator({"coordinator", "--listen", Endpoint(port), "--shards", "1",
                                  "--register-timeout", "30",
                                  SharedPath("models/stories260K.bin"), "-z",
                                  SharedPath("models/tok512.bin"), "-p", "Once upon a time",
                                  "--temp", "0", "-n", "20"});
  std::mt19937 rng(7);
  // Raw bytes that are not even ZeroMQ's handshake.
  for (int i = 0; i < 20; ++i) {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      std::string junk(1 + rng() % 4096, '\0');
      for (char& c : junk) c = static_cast<char>(rng());
      (void)!write(s, junk.data(), junk.size());
    }
    close(s);
  }
  // Well-formed ZeroMQ messages with random frames.
  zmq::context_t context;
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(Endpoint(port));
  for (int i = 0; i < 500; ++i) {
    const int frames = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < frames; ++f) {
      std::string junk(rng() % 256, '\0');
      for (char& c : junk) c = static_cast<char>(rng());
      dealer.send(zmq::buffer(junk), f + 1 < frames ? zmq::send_flags::sndmore
                                                     : zmq::send_flags::none);
    }
  }
  ASSERT_TRUE(WaitForFileCondition(coordinator.err_path(), 20000, [&] {
    return coordinator.err().find("dropped a message") != std::string::npos;
  })) << coordinator.err();
  // A real worker still registers and the answer is the usual one.
  BackgroundShardrun worker({"worker", "--connect", Endpoint(port), "--id", "w", "--model",
                             SharedPath("models/stories260K.bin")});
  EXPECT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  EXPECT_EQ(worker.Wait(10000), 0) << worker.err();
}

}  // namespace
}  // namespace shardrun
