// `shardrun worker --connect tcp://HEAD:5555 --mem 2G --threads 4 [--model FILE]`
// Without --model (or with --no-local-model) the coordinator streams the shard's weights, kept
// in --cache-dir for the next start.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "auth/token_text.h"
#include "cli/commands.h"
#include "cli/link_options.h"
#include "partitioner/byte_size.h"
#include "spdlog/spdlog.h"
#include "worker/worker.h"

namespace shardrun {
namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnStopSignal(int) { g_stop.store(true); }

struct WorkerFlags {
  WorkerOptions options;
  std::string memory = "1G";
  std::string gpu_memory = "0";
  std::string backend = "cpu";
  std::string poll = "auto";
  std::string links = "auto";
  bool no_local_model = false;
  std::string token;  // TOKEN, @FILE or -
};

}  // namespace

void AddWorkerCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<WorkerFlags>();
  CLI::App* cmd = app.add_subcommand("worker", "Run a worker that holds a shard of a model");
  cmd->add_option("--connect", flags->options.connect, "Coordinator endpoint, tcp://HOST:PORT")
      ->required();
  cmd->add_option("--id", flags->options.id, "Worker id (default: HOST-PID)");
  cmd->add_option("--mem", flags->memory, "Memory budget: 512M, 2G, ...");
  cmd->add_option("--threads", flags->options.threads, "Compute threads")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--backend", flags->backend, "Compute backend: cpu, vulkan or auto")
      ->check(CLI::IsMember({"cpu", "vulkan", "auto"}));
  cmd->add_option("--vk-device", flags->options.vk_device,
                  "Vulkan device index (see `shardrun devices`; default: the best GPU)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--gpu-mem", flags->gpu_memory, "GPU memory budget of a Vulkan worker: 2G, ...");
  CLI::Option* model =
      cmd->add_option("--model", flags->options.model_path, "Local copy of the model file");
  cmd->add_flag("--no-local-model", flags->no_local_model,
                "Receive the shard's weights from the coordinator (the default without --model)")
      ->excludes(model);
  cmd->add_option("--cache-dir", flags->options.cache_dir,
                  "Where streamed weights are kept (default: $XDG_CACHE_HOME/shardrun/weights "
                  "or ~/.cache/shardrun/weights)");
  cmd->add_flag("--wait-coordinator", flags->options.wait_coordinator,
                "When the coordinator goes away, wait for a new one instead of exiting");
  cmd->add_option("--inject", flags->options.inject,
                  "Testing: a fault to inflict on itself, e.g. kill@step=7 or, on a Vulkan "
                  "worker, gpu-lost@step=7 (also SHARDRUN_INJECT)");
  cmd->add_option("--poll", flags->poll,
                  "How to await activations: spin around their predicted arrival (a core busy "
                  "for ~1/8 of a token), block, or auto (the default: spin when the host has a "
                  "core beyond --threads)")
      ->check(CLI::IsMember({"auto", "spin", "block"}));
  AddLinkOptions(cmd, &flags->links);
  cmd->add_option("--advertise", flags->options.advertise_host,
                  "Address other workers reach this one at (needed off loopback)");
  cmd->add_option("--key", flags->options.key_dir,
                  "This worker's keys (`shardrun keygen` DIR), for CURVE and its token's proof");
  cmd->add_option("--server-key", flags->options.server_key_path,
                  "The coordinator's curve.pub: CURVE on every socket");
  cmd->add_option("--token", flags->token,
                  "Permission token from the model owner (TOKEN, @FILE or -), for a worker of "
                  "another origin");
  cmd->add_flag("--insecure", flags->options.insecure,
                "Listen off loopback without CURVE: anyone who reaches the ports may send");
  cmd->callback([flags, exit_code] {
    auto memory = ParseByteSize(flags->memory);
    if (!memory.ok()) {
      spdlog::error("--mem: {}", std::string(memory.status().message()));
      *exit_code = 2;
      return;
    }
    flags->options.memory_bytes = *memory;
    if (const char* inject = std::getenv("SHARDRUN_INJECT");
        inject != nullptr && flags->options.inject.empty()) {
      flags->options.inject = inject;
    }
    auto gpu_memory = ParseByteSize(flags->gpu_memory);
    if (!gpu_memory.ok()) {
      spdlog::error("--gpu-mem: {}", std::string(gpu_memory.status().message()));
      *exit_code = 2;
      return;
    }
    flags->options.gpu_memory_bytes = *gpu_memory;
    if (!flags->token.empty()) {
      auto token = auth::ReadTokenArgument(flags->token);
      if (!token.ok()) {
        spdlog::error("--token: {}", std::string(token.status().message()));
        *exit_code = 2;
        return;
      }
      flags->options.token = *std::move(token);
    }
    flags->options.poll = *ParsePollMode(flags->poll);
    flags->options.links = *ParseLinkMode(flags->links);
    // The Hello states the backend, so auto is settled now.
    flags->options.backend = ResolveBackendChoice(
        {*ParseBackendChoice(flags->backend), flags->options.threads, flags->options.vk_device});
    if (flags->options.id.empty()) {
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      flags->options.id = absl::StrCat(host, "-", getpid());
    }
    std::signal(SIGINT, OnStopSignal);
    std::signal(SIGTERM, OnStopSignal);
    if (absl::Status s = RunWorker(flags->options, &g_stop); !s.ok()) {
      spdlog::error("worker {}: {}", flags->options.id, std::string(s.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace shardrun
