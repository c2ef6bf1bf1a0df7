// `shardrun generate MODEL`: single-process generation, streaming tokens to stdout.
#include <memory>
#include <string>
#include <thread>

#include "cli/commands.h"
#include "cli/generation.h"
#include "cli/model_setup.h"
#include "engine/local_model.h"
#include "kernels/backend_factory.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

struct GenerateCommandFlags {
  std::string model;
  int threads = 0;
  std::string backend = "cpu";
  int vk_device = -1;
  GenerationFlags generation;
};

absl::Status RunGenerate(const GenerateCommandFlags& flags) {
  auto model_path = ResolveModelPath(flags.model);
  if (!model_path.ok()) return model_path.status();
  auto model = ModelFile::Open(*model_path);
  if (!model.ok()) return model.status();
  auto tokenizer = LoadTokenizerFor(**model, flags.generation.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();
  auto prompt = PromptIds(flags.generation, *tokenizer, flags.generation.prompt);
  if (!prompt.ok()) return prompt.status();

  const int threads =
      flags.threads > 0 ? flags.threads : std::max(1u, std::thread::hardware_concurrency());
  auto kind = ParseBackendChoice(flags.backend);
  if (!kind.ok()) return kind.status();
  auto backend = CreateBackend({*kind, threads, flags.vk_device});
  if (!backend.ok()) return backend.status();
  auto local = LocalModel::Create(**model, **backend, flags.generation.batch_size,
                                  flags.generation.ctx_size);
  if (!local.ok()) return local.status();
  const ModelConfig& config = (*model)->config();
  spdlog::info("{}: {} layers, dim {}, vocab {}; {} backend, {} threads", *model_path,
               config.n_layers, config.dim, config.vocab_size, (*backend)->name(), threads);
  return StreamGeneration(**local, **model, flags.generation, *tokenizer, *prompt);
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateCommandFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text with a model in this process");
  cmd->add_option("model", flags->model,
                  "Model file: GGUF or llama2.c .bin (default: the built-in synthetic model)");
  cmd->add_option("-t,--threads", flags->threads, "Compute threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--backend", flags->backend, "Compute backend: cpu, vulkan or auto")
      ->check(CLI::IsMember({"cpu", "vulkan", "auto"}));
  cmd->add_option("--vk-device", flags->vk_device,
                  "Vulkan device index (see `shardrun devices`; default: the best GPU)")
      ->check(CLI::NonNegativeNumber);
  AddGenerationOptions(cmd, &flags->generation);
  cmd->callback([flags, exit_code] {
    if (absl::Status s = RunGenerate(*flags); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace shardrun
