// Sharded runs across real worker processes equal the single-process run exactly.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "proto/shardrun.pb.h"
#include "tests/test_util.h"
#include "zmq.hpp"

namespace shardrun {
namespace {

using ::shardrun::testing::BackgroundShardrun;
using ::shardrun::testing::CommandResult;
using ::shardrun::testing::FreePort;
using ::shardrun::testing::IdsAfter;
using ::shardrun::testing::MakeTempDir;
using ::shardrun::testing::ProcessAlive;
using ::shardrun::testing::ReadFile;
using ::shardrun::testing::RegisteredWorkerPids;
using ::shardrun::testing::RunShardrun;
using ::shardrun::testing::SharedPath;
using ::shardrun::testing::WaitForExit;
using ::shardrun::testing::WaitForFileCondition;

std::vector<std::string> GenerationArgs(int tokens = 200) {
  return {SharedPath("models/stories260K.bin"),
          "-z",
          SharedPath("models/tok512.bin"),
          "-p",
          "Once upon a time",
          "--temp",
          "0",
          "-n",
          std::to_string(tokens),
          "--emit-ids"};
}

CommandResult SingleProcess() {
  std::vector<std::string> args = {"generate"};
  for (const std::string& a : GenerationArgs()) args.push_back(a);
  args.insert(args.end(), {"-t", "1"});
  return RunShardrun(args);
}

// The same text and the same token ids as the reference run.
void ExpectSameGeneration(const CommandResult& got, const CommandResult& want) {
  EXPECT_EQ(got.out, want.out);
  EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, "generated_ids"), ","),
            absl::StrJoin(IdsAfter(want.err, "generated_ids"), ","));
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
  std::vector<std::string> args = {
      "--shards", std::to_string(c.shards), "--type", "layer", "--worker-mem",
      c.memory,   "--worker-threads",       c.threads};
  for (const std::string& a : GenerationArgs()) args.push_back(a);
  const CommandResult got = RunShardrun(args);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  ExpectSameGeneration(got, want);
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

INSTANTIATE_TEST_SUITE_P(Shards, LayerClusterTest,
                         ::testing::Values(ClusterCase{1, "64M", "1"}, ClusterCase{2, "64M", "1"},
                                           ClusterCase{3, "64M", "1"}, ClusterCase{4, "64M", "1"},
                                           ClusterCase{5, "64M", "1"},
                                           ClusterCase{3, "64M,32M,16M", "2,1,1"},
                                           ClusterCase{4, "16M", "1,3,1,1"}),
                         [](const auto& info) {
                           return absl::StrCat(info.param.shards, "_shards_", info.index);
                         });

// A coordinator and workers pass token ids, activations and logits by link (proto/link.h):
// through shared memory on one host, by TCP links with --links tcp (as between hosts), by the
// ZeroMQ sockets alone with --links none; the tokens are the same every way.
TEST(ClusterTest, LinksCarryTheHopsBetweenStagesAndChangeNothing) {
  const CommandResult want = SingleProcess();
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (const std::string links : {"auto", "tcp", "none"}) {
    // The plan stays put (a busy machine could move the layer split mid-run).
    std::vector<std::string> args = {"--shards",     "3",   "--type",         "layer",
                                     "--worker-mem", "64M", "--no-rebalance", "--links",
                                     links};
    for (const std::string& a : GenerationArgs()) args.push_back(a);
    const CommandResult got = RunShardrun(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    ExpectSameGeneration(got, want);
    // Every stage hears from its predecessor (stage 0 from the coordinator) by link, all but
    // the first message or so (sent before the link was up).
    const std::string marker = links == "tcp" ? " by TCP link" : " by local link";
    for (const int stage : {0, 1, 2}) {
      const std::string prefix = absl::StrCat("stage ", stage, " (");
      const size_t at = got.err.find(prefix);
      ASSERT_NE(at, std::string::npos) << got.err;
      const std::string line = got.err.substr(at, got.err.find('\n', at) - at);
      EXPECT_EQ(line.find(links == "tcp" ? " by local link" : " by TCP link"), std::string::npos)
          << links << ": " << line;
      const size_t by = line.find(marker);
      if (links == "none") {
        EXPECT_EQ(by, std::string::npos) << line;
        continue;
      }
      ASSERT_NE(by, std::string::npos) << links << ": " << line;
      const size_t open = line.rfind('(', by);
      const int hops = std::stoi(line.substr(open + 1, by - open - 1));
      EXPECT_GE(hops, 190) << line;  // of 200 and the prompt's steps
    }
  }
}

TEST(ClusterTest, MoeModelLayerShardsEqualSingleProcess) {
  const std::vector<std::string> common = {SharedPath("models/moe-mini-q8_0.gguf"),
                                           "--prompt-ids",
                                           "1,300,301,302",
                                           "-n",
                                           "40",
                                           "--temp",
                                           "0",
                                           "--ignore-eos",
                                           "--emit-ids"};
  std::vector<std::string> single = {"generate", "-t", "1"};
  single.insert(single.end(), common.begin(), common.end());
  const CommandResult want = RunShardrun(single);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (const char* type : {"layer", "pipeline"}) {
    std::vector<std::string> args = {"--shards", "3", "--type", type};
    args.insert(args.end(), common.begin(), common.end());
    const CommandResult got = RunShardrun(args);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    // Pipeline mode numbers its sequences: "generated_ids[1]: ...".
    const std::string key = std::string(type) == "pipeline" ? "generated_ids[1]" : "generated_ids";
    EXPECT_EQ(absl::StrJoin(IdsAfter(got.err, key), ","),
              absl::StrJoin(IdsAfter(want.err, "generated_ids"), ","))
        << type;
  }
}

TEST(ClusterTest, PlanPrintsEveryWorkerAndExits) {
  const CommandResult r =
      RunShardrun({"--shards", "3", "--plan", SharedPath("models/stories260K.bin"), "-z",
                   SharedPath("models/tok512.bin")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* id : {"w0", "w1", "w2"}) EXPECT_NE(r.out.find(id), std::string::npos) << r.out;
  for (int pid : RegisteredWorkerPids(r.err)) EXPECT_FALSE(ProcessAlive(pid));
}

TEST(ClusterTest, ModelTooBigForTheBudgetsNamesTheShortfall) {
  const CommandResult r =
      RunShardrun({"--shards", "2", "--worker-mem", "100K", SharedPath("models/stories260K.bin"),
                   "-z", SharedPath("models/tok512.bin"), "-n", "4"});
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
  std::vector<std::string> args = {"--shards",   "3", "--type",    "pipeline",
                                   "--parallel", "4", "--prompts", prompts_file};
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

// A prompt the model cannot take (here: longer than the context) is reported and skipped; the
// others run as they would alone, and the run ends with an error saying how many were skipped.
class SkippedPromptTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SkippedPromptTest, TheOtherPromptsStillRun) {
  std::string too_long;
  for (int i = 0; i < 40; ++i) too_long += "Once upon a time ";
  const std::vector<std::string> prompts = {"Once upon a time", too_long, "The dog"};
  const std::string prompts_file = ::testing::TempDir() + "/skipped_prompts_" + GetParam();
  {
    std::ofstream out(prompts_file);
    for (const std::string& p : prompts) out << p << "\n";
  }
  const std::vector<std::string> common = {SharedPath("models/stories260K.bin"),
                                           "-z",
                                           SharedPath("models/tok512.bin"),
                                           "-n",
                                           "24",
                                           "--ctx-size",
                                           "64",
                                           "--temp",
                                           "0"};
  std::string want;
  for (const std::string& p : {prompts[0], prompts[2]}) {
    std::vector<std::string> args = {"generate", "-t", "1", "-p", p};
    args.insert(args.end(), common.begin(), common.end());
    const CommandResult r = RunShardrun(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    want += r.out;
  }
  std::vector<std::string> args = {"--shards", "2",         "--type",
                                   GetParam(), "--prompts", prompts_file};
  args.insert(args.end(), common.begin(), common.end());
  const CommandResult got = RunShardrun(args);
  EXPECT_NE(got.exit_code, 0);
  EXPECT_EQ(got.out, want);
  EXPECT_NE(got.err.find("prompt 2: the prompt has"), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("the context holds 64; skipped"), std::string::npos) << got.err;
  EXPECT_NE(got.err.find("1 of 3 prompts could not run"), std::string::npos) << got.err;
  for (int pid : RegisteredWorkerPids(got.err)) EXPECT_FALSE(ProcessAlive(pid));
}

INSTANTIATE_TEST_SUITE_P(Kinds, SkippedPromptTest, ::testing::Values("layer", "pipeline"));

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
  const CommandResult r =
      RunShardrun({"--shards", "2", "--parallel", "2", SharedPath("models/stories260K.bin"), "-z",
                   SharedPath("models/tok512.bin")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--parallel needs --type pipeline"), std::string::npos) << r.err;
}

// A 3-shard run whose first `file_less` workers have no model file and keep streamed weights
// in `cache_dir`.
CommandResult StreamedRun(int file_less, const std::string& cache_dir) {
  std::vector<std::string> args = {
      "--shards",           "3",      "--no-local-model-workers", std::to_string(file_less),
      "--worker-cache-dir", cache_dir};
  for (const std::string& a : GenerationArgs()) args.push_back(a);
  return RunShardrun(args);
}

// Bytes the coordinator streamed to `worker` ("worker w0: streamed N bytes"), -1 if absent.
int64_t StreamedBytes(const std::string& log, const std::string& worker) {
  std::smatch m;
  const std::regex re("worker " + worker + ": streamed ([0-9]+) bytes");
  if (!std::regex_search(log, m, re)) return -1;
  return std::stoll(m[1]);
}

std::string ManifestPath(const std::string& cache_dir) {
  for (const auto& entry : std::filesystem::directory_iterator(cache_dir)) {
    if (entry.path().extension() == ".manifest") return entry.path().string();
  }
  return "";
}

TEST(StreamedWeightsTest, FileLessWorkersGetTheirWeightsStreamed) {
  const CommandResult want = SingleProcess();
  ASSERT_EQ(want.exit_code, 0) << want.err;
  for (int file_less : {1, 2}) {
    const std::string cache_dir = MakeTempDir();
    const CommandResult got = StreamedRun(file_less, cache_dir);
    ASSERT_EQ(got.exit_code, 0) << got.err;
    ExpectSameGeneration(got, want);
    for (int w = 0; w < 3; ++w) {
      const std::string id = absl::StrCat("w", w);
      if (w < file_less) {
        EXPECT_GT(StreamedBytes(got.err, id), 0) << got.err;
      } else {
        EXPECT_EQ(StreamedBytes(got.err, id), -1) << got.err;  // has the file
      }
    }
    for (int pid : RegisteredWorkerPids(got.err)) EXPECT_FALSE(ProcessAlive(pid));
    std::filesystem::remove_all(cache_dir);
  }
}

TEST(StreamedWeightsTest, ARestartWithTheCacheStreamsNothing) {
  const CommandResult want = SingleProcess();
  ASSERT_EQ(want.exit_code, 0) << want.err;
  const std::string cache_dir = MakeTempDir();
  const CommandResult first = StreamedRun(2, cache_dir);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_GT(StreamedBytes(first.err, "w0"), 0) << first.err;
  const CommandResult second = StreamedRun(2, cache_dir);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.out, want.out);
  EXPECT_EQ(StreamedBytes(second.err, "w0"), 0) << second.err;
  EXPECT_EQ(StreamedBytes(second.err, "w1"), 0) << second.err;
  EXPECT_NE(second.err.find("nothing to fetch"), std::string::npos) << second.err;
  std::filesystem::remove_all(cache_dir);
}

class StreamedModelTest : public ::testing::TestWithParam<std::vector<std::string>> {};

// Other layouts: a GGUF file (vocabulary in the headers, tensors over several 1 MiB chunks) and
// a llama2.c version-2 file (each tensor's group scales are a range of their own).
TEST_P(StreamedModelTest, EqualsSingleProcess) {
  std::vector<std::string> model_args;
  for (const std::string& a : GetParam()) {
    model_args.push_back(a.ends_with(".gguf") || a.ends_with(".bin") ? SharedPath(a) : a);
  }
  const std::vector<std::string> gen = {"-p", "Once upon a time", "--temp", "0", "-n", "30"};
  std::vector<std::string> single = {"generate", "-t", "1"};
  single.insert(single.end(), model_args.begin(), model_args.end());
  single.insert(single.end(), gen.begin(), gen.end());
  const CommandResult want = RunShardrun(single);
  ASSERT_EQ(want.exit_code, 0) << want.err;
  const std::string cache_dir = MakeTempDir();
  std::vector<std::string> cluster = {
      "--shards", "3", "--no-local-model-workers", "3", "--worker-cache-dir", cache_dir};
  cluster.insert(cluster.end(), model_args.begin(), model_args.end());
  cluster.insert(cluster.end(), gen.begin(), gen.end());
  const CommandResult got = RunShardrun(cluster);
  ASSERT_EQ(got.exit_code, 0) << got.err;
  EXPECT_EQ(got.out, want.out);
  for (const char* id : {"w0", "w1", "w2"}) EXPECT_GT(StreamedBytes(got.err, id), 0) << got.err;
  std::filesystem::remove_all(cache_dir);
}

INSTANTIATE_TEST_SUITE_P(Layouts, StreamedModelTest,
                         ::testing::Values(std::vector<std::string>{"models/mini-f32.gguf"},
                                           std::vector<std::string>{"models/stories260K-v2-gs4.bin",
                                                                    "-z", "models/tok512.bin"}),
                         [](const auto& info) { return info.index == 0 ? "gguf" : "llama2c_v2"; });

// A cached tensor whose bytes changed on disk fails its hash at load and is fetched again;
// the run's output is unchanged.
TEST(StreamedWeightsTest, ACorruptedCacheIsFetchedAgain) {
  const CommandResult want = SingleProcess();
  ASSERT_EQ(want.exit_code, 0) << want.err;
  const std::string cache_dir = MakeTempDir();
  const CommandResult first = StreamedRun(1, cache_dir);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string manifest = ManifestPath(cache_dir);
  ASSERT_FALSE(manifest.empty());
  // Lines: "<sha256> <offset> <bytes> <name>"; flip a byte in the middle of a tensor.
  std::istringstream lines(ReadFile(manifest));
  std::string sha, name;
  int64_t offset = 0, bytes = 0;
  while (lines >> sha >> offset >> bytes >> name && name == "#header") {
  }
  ASSERT_NE(name, "#header");
  const std::string model = manifest.substr(0, manifest.size() - 9) + ".model";
  {
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << model;
    f.seekg(offset + bytes / 2);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x10);
    f.seekp(offset + bytes / 2);
    f.write(&c, 1);
  }
  const CommandResult second = StreamedRun(1, cache_dir);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(second.out, want.out);
  EXPECT_NE(second.err.find("cached range " + name + " no longer matches its sha256"),
            std::string::npos)
      << second.err;
  EXPECT_EQ(StreamedBytes(second.err, "w0"), bytes) << second.err;
  std::filesystem::remove_all(cache_dir);
}

std::string Endpoint(int port) { return absl::StrCat("tcp://127.0.0.1:", port); }

TEST(ClusterTest, WorkerWithAnotherModelFileIsRefused) {
  const int port = FreePort();
  BackgroundShardrun coordinator({"coordinator", "--listen", Endpoint(port), "--shards", "1",
                                  "--register-timeout", "3", SharedPath("models/stories260K.bin"),
                                  "-z", SharedPath("models/tok512.bin"), "-n", "4"});
  // Same weights, other file (export.py version 1): another content hash.
  const CommandResult worker = RunShardrun({"worker", "--connect", Endpoint(port), "--id", "other",
                                            "--model", SharedPath("models/stories260K-v1.bin")});
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
                                  "--register-timeout", "60", SharedPath("models/stories260K.bin"),
                                  "-z", SharedPath("models/tok512.bin")});
  std::vector<std::unique_ptr<BackgroundShardrun>> workers;
  for (const char* id : {"a", "b"}) {
    workers.push_back(std::make_unique<BackgroundShardrun>(
        std::vector<std::string>{"worker", "--connect", Endpoint(port), "--id", id, "--model",
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

// The endpoint in a worker's "activations arrive at ENDPOINT" log line, or "".
std::string DataEndpoint(const std::string& log) {
  const std::string marker = "activations arrive at ";
  const size_t at = log.find(marker);
  if (at == std::string::npos) return "";
  const size_t begin = at + marker.size();
  return log.substr(begin, log.find_first_of(" \n", begin) - begin);
}

TEST(ClusterTest, GarbageOnWorkerSocketsCrashesNothing) {
  const int port = FreePort();
  const std::vector<std::string> generation = GenerationArgs(60);
  std::vector<std::string> coordinator_args = {
      "coordinator", "--listen", Endpoint(port), "--shards", "3", "--register-timeout", "60"};
  coordinator_args.insert(coordinator_args.end(), generation.begin(), generation.end());
  BackgroundShardrun coordinator(coordinator_args);
  std::vector<std::unique_ptr<BackgroundShardrun>> workers;
  auto start_worker = [&](const std::string& id) {
    workers.push_back(std::make_unique<BackgroundShardrun>(
        std::vector<std::string>{"worker", "--connect", Endpoint(port), "--id", id, "--model",
                                 SharedPath("models/stories260K.bin")}));
  };
  start_worker("a");
  start_worker("b");
  std::mt19937 rng(11);
  zmq::context_t context;
  for (auto& w : workers) {
    ASSERT_TRUE(WaitForFileCondition(w->err_path(), 30000, [&] {
      return !DataEndpoint(w->err()).empty();
    })) << w->err();
    const std::string endpoint = DataEndpoint(w->err());
    // Well-formed ZeroMQ messages with random frames, and envelopes that parse but lie.
    zmq::socket_t push(context, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 1000);
    push.connect(endpoint);
    for (int i = 0; i < 300; ++i) {
      const int frames = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < frames; ++f) {
        std::string junk(rng() % 512, '\0');
        for (char& c : junk) c = static_cast<char>(rng());
        push.send(zmq::buffer(junk),
                  f + 1 < frames ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    }
    push.close();
  }
  // The last worker joins after the garbage; the run must still equal the single process.
  start_worker("c");
  ASSERT_EQ(coordinator.Wait(60000), 0) << coordinator.err();
  std::vector<std::string> single = {"generate", "-t", "1"};
  single.insert(single.end(), generation.begin(), generation.end());
  const CommandResult want = RunShardrun(single);
  EXPECT_EQ(absl::StrJoin(IdsAfter(coordinator.err(), "generated_ids"), ","),
            absl::StrJoin(IdsAfter(want.err, "generated_ids"), ","));
  for (auto& w : workers) EXPECT_EQ(w->Wait(10000), 0) << w->err();
  EXPECT_NE(workers[0]->err().find("dropped a message"), std::string::npos) << workers[0]->err();
}

TEST(ClusterTest, OtherProtocolVersionIsRefusedWithBothVersions) {
  const int port = FreePort();
  BackgroundShardrun coordinator({"coordinator", "--listen", Endpoint(port), "--shards", "1",
                                  "--register-timeout", "20", SharedPath("models/stories260K.bin"),
                                  "-z", SharedPath("models/tok512.bin"), "-n", "4"});
  zmq::context_t context;
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::routing_id, "future");
  dealer.connect(Endpoint(port));
  wire::Envelope hello;
  hello.set_protocol_version(99);
  hello.mutable_hello()->set_protocol_version(99);
  hello.mutable_hello()->set_worker_id("future");
  const std::string bytes = hello.SerializeAsString();
  dealer.send(zmq::buffer(bytes));
  zmq::message_t reply;
  dealer.set(zmq::sockopt::rcvtimeo, 20000);
  ASSERT_TRUE(dealer.recv(reply)) << coordinator.err();
  wire::Envelope welcome;
  ASSERT_TRUE(welcome.ParseFromArray(reply.data(), static_cast<int>(reply.size())));
  ASSERT_TRUE(welcome.has_welcome());
  EXPECT_FALSE(welcome.welcome().accepted());
  EXPECT_NE(welcome.welcome().reason().find("99"), std::string::npos) << welcome.welcome().reason();
  EXPECT_NE(welcome.welcome().reason().find("1"), std::string::npos);
  // A good worker is still served afterwards.
  BackgroundShardrun worker({"worker", "--connect", Endpoint(port), "--id", "w", "--model",
                             SharedPath("models/stories260K.bin")});
  EXPECT_EQ(coordinator.Wait(30000), 0) << coordinator.err();
  EXPECT_EQ(worker.Wait(10000), 0) << worker.err();
}

TEST(ClusterTest, InterruptedRunLeavesNoWorkerBehind) {
  // Enough prompts to keep the run busy until the interrupt arrives.
  const std::string prompts_file = ::testing::TempDir() + "/many_prompts.txt";
  {
    std::ofstream out(prompts_file);
    for (int i = 0; i < 2000; ++i) out << "Once upon a time\n";
  }
  BackgroundShardrun run({"--shards", "2", "--prompts", prompts_file,
                          SharedPath("models/stories260K.bin"), "-z",
                          SharedPath("models/tok512.bin"), "-n", "200"});
  ASSERT_TRUE(WaitForFileCondition(run.err_path(), 30000, [&] {
    return run.err().find("loaded its shard") != std::string::npos;
  })) << run.err();
  const std::vector<int> pids = RegisteredWorkerPids(run.err());
  ASSERT_EQ(pids.size(), 2u) << run.err();
  kill(run.pid(), SIGINT);  // as Ctrl-C would, but to the coordinator alone
  EXPECT_NE(run.Wait(10000), -1);
  for (int pid : pids) EXPECT_TRUE(WaitForExit(pid, 10000)) << "worker " << pid << " survived";
}

TEST(ClusterTest, GarbageOnTheCoordinatorSocketCrashesNothing) {
  const int port = FreePort();
  BackgroundShardrun coordinator({"coordinator", "--listen", Endpoint(port), "--shards", "1",
                                  "--register-timeout", "30", SharedPath("models/stories260K.bin"),
                                  "-z", SharedPath("models/tok512.bin"), "-p", "Once upon a time",
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
      dealer.send(zmq::buffer(junk),
                  f + 1 < frames ? zmq::send_flags::sndmore : zmq::send_flags::none);
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
