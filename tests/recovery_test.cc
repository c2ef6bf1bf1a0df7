// Failure recovery, by fault injection: workers killed (SIGKILL) at seeded random steps in
// every partition kind, with and without a spare; a stalled worker; dropped, duplicated and
// garbled messages; a worker killed while loading. Every run must end with exactly the
// single-process tokens (or, when nothing can hold the lost shard, the documented error) and
// leave no process behind. SHARDRUN_FAULT_RUNS=N runs N seeded kills instead of 20.
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace shardrun {
namespace {

using ::shardrun::testing::BackgroundShardrun;
using ::shardrun::testing::CommandResult;
using ::shardrun::testing::FreePort;
using ::shardrun::testing::IdsAfter;
using ::shardrun::testing::MakeTempDir;
using ::shardrun::testing::ProcessAlive;
using ::shardrun::testing::RegisteredWorkerPids;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;
using ::shardrun::testing::WaitForFileCondition;

struct Model {
  std::vector<std::string> args;  // model file and its vocabulary
};

Model Stories() {
  return {{SharedPath("models/stories260K.bin"), "-z", SharedPath("models/tok512.bin")}};
}
Model Moe() { return {{SharedPath("models/moe-mini-q8_0.gguf")}}; }

std::vector<std::string> Generation(const Model& m) {
  std::vector<std::string> args = m.args;
  args.insert(args.end(), {"--prompt-ids", "1,300,301,302", "-n", "64", "--temp", "0",
                           "--ignore-eos", "--emit-ids"});
  return args;
}

std::string Reference(const Model& m) {
  std::vector<std::string> args = {"generate", "-t", "1"};
  for (const std::string& a : Generation(m)) args.push_back(a);
  const CommandResult r = RunShardrun(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return absl::StrJoin(IdsAfter(r.err, "generated_ids"), ",");
}

// Runs a local cluster with `flags`; returns its result after checking no worker survived.
CommandResult Cluster(const Model& m, std::vector<std::string> flags) {
  for (const std::string& a : Generation(m)) flags.push_back(a);
  const CommandResult r = RunShardrun(flags);
  for (int pid : RegisteredWorkerPids(r.err)) {
    EXPECT_FALSE(ProcessAlive(pid)) << "worker pid " << pid << " outlived the run";
  }
  return r;
}

std::string Ids(const CommandResult& r, const std::string& type) {
  return absl::StrJoin(IdsAfter(r.err, type == "pipeline" ? "generated_ids[1]" : "generated_ids"),
                       ",");
}

TEST(RecoveryTest, SeededKillsOfEveryRoleGiveIdenticalOutput) {
  const std::string stories = Reference(Stories());
  const std::string moe = Reference(Moe());
  int runs = 20;
  if (const char* n = std::getenv("SHARDRUN_FAULT_RUNS")) runs = std::max(1, std::atoi(n));
  const char* kTypes[] = {"layer", "pipeline", "tensor", "expert"};
  for (int seed = 1; seed <= runs; ++seed) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    const std::string type = kTypes[rng() % 4];
    const int shards = 2 + static_cast<int>(rng() % 3);
    const bool spare = rng() % 2 == 0;
    const int victim = static_cast<int>(rng() % shards);
    const int step = 2 + static_cast<int>(rng() % 50);
    std::vector<std::string> flags = {"--shards", std::to_string(shards),
                                      "--type",   type,
                                      "--inject", absl::StrCat("w", victim, ":kill@step=", step)};
    if (spare) flags.insert(flags.end(), {"--spares", "1"});
    const std::string what = absl::StrCat("seed ", seed, ": ", absl::StrJoin(flags, " "));
    const bool is_moe = type == "expert";
    const CommandResult r = Cluster(is_moe ? Moe() : Stories(), flags);
    ASSERT_EQ(r.exit_code, 0) << what << "\n" << r.err;
    EXPECT_EQ(Ids(r, type), is_moe ? moe : stories) << what;
    // The victim may hold nothing (a spare in the plan's eyes) or die before its step comes.
    if (r.err.find("injected fault") != std::string::npos) {
      EXPECT_NE(r.err.find("recovered in"), std::string::npos) << what << "\n" << r.err;
    }
  }
}

// Without links, a tensor group's survivor gives up on its dead peer's partial sums only after
// its timeout, when recovery has already deployed the next plan: that late error must not fail
// recovery.
TEST(RecoveryTest, TensorSurvivorsLateErrorDoesNotFailRecovery) {
  const std::string want = Reference(Stories());
  const CommandResult r = Cluster(Stories(), {"--shards", "2", "--type", "tensor", "--spares", "1",
                                              "--inject", "w1:kill@step=10", "--links", "none"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Ids(r, "tensor"), want);
  EXPECT_NE(r.err.find("recovered in"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("recovery attempt failed"), std::string::npos) << r.err;
}

// With links (the default), the survivor hears its peer's death from the link itself (the
// killed process's end closes) and stops waiting for its partial sums at once.
TEST(RecoveryTest, TensorSurvivorSeesItsPeersLinkClose) {
  const std::string want = Reference(Stories());
  const CommandResult r = Cluster(Stories(), {"--shards", "2", "--type", "tensor", "--spares", "1",
                                              "--inject", "w1:kill@step=10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Ids(r, "tensor"), want);
  EXPECT_NE(r.err.find("tensor-parallel rank 1 is gone (its link closed)"), std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("sent no partial sums"), std::string::npos) << r.err;  // no timeout
  EXPECT_NE(r.err.find("recovered in"), std::string::npos) << r.err;
}

TEST(RecoveryTest, SpareTakesOverWithoutShrinkingThePlan) {
  const std::string want = Reference(Stories());
  const CommandResult r =
      Cluster(Stories(), {"--shards", "3", "--spares", "1", "--inject", "w1:kill@step=10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Ids(r, "layer"), want);
  EXPECT_NE(r.err.find("on 3 worker(s)"), std::string::npos) << r.err;
}

TEST(RecoveryTest, MessageFaultsAndStallsAreRecovered) {
  const std::string want = Reference(Stories());
  const std::vector<std::vector<std::string>> cases = {
      {"--inject", "w1:drop@step=9", "--step-timeout", "1"},
      {"--inject", "w2:duplicate@step=9"},
      {"--inject", "w1:corrupt@step=9", "--step-timeout", "1"},
      {"--inject", "w1:stall@step=9:ms=3000"},  // a hung tab: declared dead after 2 s
      {"--inject", "w1:kill@load"},
      {"--type", "tensor", "--inject", "w0:drop@step=12", "--step-timeout", "1"},
  };
  for (std::vector<std::string> flags : cases) {
    const std::string what = absl::StrJoin(flags, " ");
    flags.insert(flags.begin(), {"--shards", "3"});
    const CommandResult r = Cluster(Stories(), flags);
    ASSERT_EQ(r.exit_code, 0) << what << "\n" << r.err;
    EXPECT_EQ(Ids(r, "layer"), want) << what;
  }
}

TEST(RecoveryTest, SequencesInFlightAreAllReplayed) {
  const std::string dir = MakeTempDir();
  std::ofstream(dir + "/prompts.txt") << "Once upon a time\nThe cat\nA little girl\n";
  std::vector<std::string> common = Stories().args;
  common.insert(common.end(), {"--temp", "0", "-n", "48", "--ignore-eos", "--emit-ids", "--prompts",
                               dir + "/prompts.txt"});
  std::vector<std::string> clean = {"--shards", "3", "--type", "pipeline", "--parallel", "3"};
  clean.insert(clean.end(), common.begin(), common.end());
  const CommandResult want = RunShardrun(clean);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  std::vector<std::string> faulty = clean;
  faulty.insert(faulty.end(), {"--inject", "w2:kill@step=40"});
  const CommandResult got = RunShardrun(faulty);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  for (int s = 1; s <= 3; ++s) {
    const std::string key = absl::StrCat("generated_ids[", s, "]");
    EXPECT_EQ(IdsAfter(got.err, key), IdsAfter(want.err, key)) << key;
  }
  EXPECT_NE(got.err.find("3 sequence(s) replayed"), std::string::npos) << got.err;
}

// Load balancing: a worker whose steps take 20x as long (another process steals its
// CPU) loses its layers between tokens; the output does not change.
TEST(RecoveryTest, RebalanceMovesLayersOffASlowWorker) {
  const std::string want = Reference(Stories());
  const CommandResult r = Cluster(Stories(), {"--shards", "3", "--inject", "w0:slow@x=20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Ids(r, "layer"), want);
  EXPECT_NE(r.err.find("rebalancing: stage times w0"), std::string::npos) << r.err;
  const CommandResult fixed =
      Cluster(Stories(), {"--shards", "3", "--inject", "w0:slow@x=20", "--no-rebalance"});
  ASSERT_EQ(fixed.exit_code, 0) << fixed.err;
  EXPECT_EQ(fixed.err.find("rebalancing"), std::string::npos);
}

TEST(RecoveryTest, NothingCanHoldTheShardGivesTheDocumentedError) {
  // Two workers that can each hold only about half of the model: once one dies, the other
  // cannot take everything and no worker joins.
  const CommandResult r =
      Cluster(Stories(), {"--shards", "2", "--worker-mem", "1300K", "--recovery-timeout", "1",
                          "--inject", "w0:kill@step=6"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot recover"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no worker that could hold the lost shard joined"), std::string::npos)
      << r.err;
}

// A worker stopped with SIGSTOP mid-answer (a frozen tab) is declared dead within the 2 s
// default and its shard moves; continued later, it learns it was dropped and exits.
TEST(RecoveryTest, StoppedWorkerIsReplacedAndExitsWhenContinued) {
  const std::string want = Reference(Stories());
  std::vector<std::string> args = {"--shards", "3", "--inject", "w0:slow@ms=30", "--no-rebalance"};
  for (const std::string& a : Generation(Stories())) args.push_back(a);
  BackgroundShardrun run(args);
  // w1 is stopped once every worker has loaded (the run then needs ~2 s for 64 tokens).
  ASSERT_TRUE(WaitForFileCondition(run.err_path(), 30000, [&] {
    return run.err().find("w2 loaded its shard") != std::string::npos;
  })) << run.err();
  const std::vector<int> pids = RegisteredWorkerPids(run.err());
  ASSERT_EQ(pids.size(), 3u);
  // "worker w1 registered: host H, pid P, ..."
  const std::string marker = "worker w1 registered: ";
  const size_t at = run.err().find(marker);
  ASSERT_NE(at, std::string::npos);
  const size_t pid_at = run.err().find("pid ", at) + 4;
  const int w1 = std::atoi(run.err().c_str() + pid_at);
  ASSERT_GT(w1, 0);
  kill(w1, SIGSTOP);
  ASSERT_TRUE(WaitForFileCondition(run.err_path(), 30000, [&] {
    return run.err().find("recovered in") != std::string::npos;
  })) << run.err();
  kill(w1, SIGCONT);
  EXPECT_EQ(run.Wait(60000), 0) << run.err();
  EXPECT_EQ(absl::StrJoin(IdsAfter(run.err(), "generated_ids"), ","), want);
  EXPECT_NE(run.err().find("worker w1 declared dead"), std::string::npos) << run.err();
  for (int pid : pids) EXPECT_FALSE(ProcessAlive(pid)) << pid;
}

// A worker started with --wait-coordinator outlives a killed coordinator and serves the next
// one on the same address; one killed and restarted under the same identity rejoins as a
// replacement and the answer stays identical.
TEST(RecoveryTest, WorkersOutliveACoordinatorAndRejoinUnderTheirIdentity) {
  const std::string want = Reference(Stories());
  const std::string endpoint = absl::StrCat("tcp://127.0.0.1:", FreePort());
  auto worker = [&](const std::string& id, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"worker",
                                     "--connect",
                                     endpoint,
                                     "--id",
                                     id,
                                     "--model",
                                     SharedPath("models/stories260K.bin"),
                                     "--wait-coordinator"};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<BackgroundShardrun>(args);
  };
  auto coordinator = [&](const std::string& shards, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {
        "coordinator", "--listen",           endpoint, "--shards", shards, "--coordinator-timeout",
        "2",           "--register-timeout", "60"};
    args.insert(args.end(), extra.begin(), extra.end());
    for (const std::string& a : Generation(Stories())) args.push_back(a);
    return std::make_unique<BackgroundShardrun>(args);
  };
  auto a = worker("a");
  auto b = worker("b", {"--inject", "kill@step=20"});
  {
    // The first coordinator waits for a third worker that never comes; it is killed.
    auto first = coordinator("3");
    ASSERT_TRUE(WaitForFileCondition(first->err_path(), 30000, [&] {
      return RegisteredWorkerPids(first->err()).size() == 2;
    })) << first->err();
    kill(first->pid(), SIGKILL);
    EXPECT_EQ(first->Wait(10000), 128 + SIGKILL);
  }
  // The second one gets both; b dies at step 20 and comes back under its own name.
  auto second = coordinator("2");
  ASSERT_TRUE(WaitForFileCondition(second->err_path(), 30000, [&] {
    return second->err().find("injected fault") != std::string::npos || b->Wait(0) >= 0;
  }));
  EXPECT_EQ(b->Wait(20000), 128 + SIGKILL);
  auto b_again = worker("b");
  EXPECT_EQ(second->Wait(60000), 0) << second->err();
  EXPECT_EQ(absl::StrJoin(IdsAfter(second->err(), "generated_ids"), ","), want) << second->err();
  EXPECT_NE(second->err().find("recovered in"), std::string::npos) << second->err();
  // The coordinator's shutdown ends the workers.
  EXPECT_EQ(a->Wait(20000), 0) << a->err();
  EXPECT_EQ(b_again->Wait(20000), 0) << b_again->err();
  EXPECT_NE(a->err().find("waiting for a coordinator"), std::string::npos) << a->err();
}

}  // namespace
}  // namespace shardrun
