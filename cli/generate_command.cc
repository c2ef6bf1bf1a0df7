// `shardrun generate MODEL`: single-process generation, streaming tokens to stdout.
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "cli/model_setup.h"
#include "engine/generator.h"
#include "engine/local_model.h"
#include "kernels/cpu/cpu_backend.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

struct GenerateFlags {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  std::string prompt_ids;
  int n_predict = 256;
  float temperature = 0.8f;
  float top_p = 0.9f;
  int top_k = 0;
  float repeat_penalty = 1.0f;
  int64_t seed = -1;
  int threads = 0;
  int ctx_size = 0;
  int batch_size = 64;
  bool emit_ids = false;
  bool ignore_eos = false;
  std::string dump_logits;
};

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--prompt-ids: not a token id: '", part, "'"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--prompt-ids: no ids given");
  return ids;
}

absl::Status WriteLogits(const std::string& path, std::span<const float> logits) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat(path, ": cannot write"));
  for (float v : logits) std::fprintf(f, "%.9g\n", v);
  if (std::fclose(f) != 0) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

void PrintRate(const char* what, int tokens, absl::Duration time) {
  const double ms = absl::ToDoubleMilliseconds(time);
  std::fprintf(stderr, "%s: %d tokens in %.2f ms, %.2f tok/s\n", what, tokens, ms,
               ms > 0 ? tokens * 1000.0 / ms : 0.0);
}

absl::Status RunGenerate(const GenerateFlags& flags) {
  auto model_path = ResolveModelPath(flags.model);
  if (!model_path.ok()) return model_path.status();
  auto model = ModelFile::Open(*model_path);
  if (!model.ok()) return model.status();
  const ModelConfig& config = (*model)->config();
  auto tokenizer = LoadTokenizerFor(**model, flags.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();

  std::vector<int32_t> prompt;
  if (!flags.prompt_ids.empty()) {
    auto ids = ParseIds(flags.prompt_ids);
    if (!ids.ok()) return ids.status();
    prompt = *std::move(ids);
  } else if (tokenizer->has_value()) {
    prompt = (*tokenizer)->Encode(flags.prompt, /*add_bos=*/true, /*add_eos=*/false);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        *model_path, " has no vocabulary: give --tokenizer FILE or --prompt-ids"));
  }

  const int threads = flags.threads > 0 ? flags.threads
                                        : std::max(1u, std::thread::hardware_concurrency());
  auto backend = CpuBackend::Create(threads);
  if (!backend.ok()) return backend.status();
  auto local = LocalModel::Create(**model, **backend, flags.batch_size, flags.ctx_size);
  if (!local.ok()) return local.status();
  spdlog::info("{}: {} layers, dim {}, vocab {}; {} threads", *model_path, config.n_layers,
               config.dim, config.vocab_size, threads);

  GenerateOptions options;
  options.max_new_tokens = flags.n_predict < 0 ? config.context_length : flags.n_predict;
  options.ignore_stop = flags.ignore_eos;
  options.sampler.temperature = flags.temperature;
  options.sampler.top_p = flags.top_p;
  options.sampler.top_k = flags.top_k;
  options.sampler.repeat_penalty = flags.repeat_penalty;
  options.sampler.seed = flags.seed >= 0 ? static_cast<uint64_t>(flags.seed)
                                         : static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  if (flags.seed < 0 && flags.temperature > 0) {
    spdlog::info("seed {} (give --seed to reproduce)", options.sampler.seed);
  }
  if (tokenizer->has_value()) {
    options.stop_tokens.push_back((*tokenizer)->eos_id());
    // run.c stops when it samples BOS; llama2.c checkpoints keep that behaviour.
    if ((*model)->format() != ModelFormat::kGguf) options.stop_tokens.push_back((*tokenizer)->bos_id());
  } else {
    options.stop_tokens = {2};
  }

  // Echo the prompt, then stream each token as it is sampled.
  const Tokenizer* tok = tokenizer->has_value() ? &**tokenizer : nullptr;
  int32_t prev = prompt[0];
  if (tok != nullptr) {
    for (size_t i = 1; i < prompt.size(); ++i) {
      const std::string piece = tok->DecodePiece(prompt[i - 1], prompt[i]);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
    }
    prev = prompt.back();
  }
  std::fflush(stdout);
  absl::Status logits_status;
  GenerateCallbacks callbacks;
  if (!flags.dump_logits.empty()) {
    callbacks.on_prompt_logits = [&](std::span<const float> logits) {
      logits_status = WriteLogits(flags.dump_logits, logits);
    };
  }
  callbacks.on_token = [&](int32_t token) {
    const bool is_stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(),
                                   token) != options.stop_tokens.end();
    if (!is_stop || options.ignore_stop) {
      if (tok != nullptr) {
        const std::string piece = tok->DecodePiece(prev, token);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
      } else {
        std::printf(" %d", token);
      }
      std::fflush(stdout);
    }
    prev = token;
    return true;
  };

  GenerateStats stats;
  auto generated = Generator(**local).Generate(prompt, options, callbacks, &stats);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (!generated.ok()) return generated.status();
  if (!logits_status.ok()) return logits_status;
  if (flags.emit_ids) {
    std::fprintf(stderr, "prompt_ids: %s\ngenerated_ids: %s\n",
                 absl::StrJoin(prompt, ",").c_str(), absl::StrJoin(*generated, ",").c_str());
  }
  PrintRate("prefill", stats.prefill_tokens, stats.prefill_time);
  PrintRate("decode", stats.decode_tokens, stats.decode_time);
  return absl::OkStatus();
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text with a model in this process");
  cmd->add_option("model", flags->model,
                  "Model file: GGUF or llama2.c .bin (default: the built-in synthetic model)");
  cmd->add_option("--tokenizer,-z", flags->tokenizer, "llama2.c tokenizer.bin");
  cmd->add_option("-p,--prompt", flags->prompt, "Prompt text");
  cmd->add_option("--prompt-ids", flags->prompt_ids, "Prompt as token ids: 1,2,3");
  cmd->add_option("-n,--n-predict", flags->n_predict,
                  "Tokens to generate after the prompt (-1: until the context is full)");
  cmd->add_option("--temp", flags->temperature, "Temperature (0 = greedy)")
      ->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-p", flags->top_p, "Nucleus sampling threshold");
  cmd->add_option("--top-k", flags->top_k, "Keep only the k most likely tokens (0 = off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--repeat-penalty", flags->repeat_penalty, "Repetition penalty (1 = off)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("-s,--seed", flags->seed, "Sampling seed (default: from the clock)");
  cmd->add_option("-t,--threads", flags->threads, "Compute threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-c,--ctx-size", flags->ctx_size, "Context positions (default: the model's)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-b,--batch-size", flags->batch_size, "Prompt tokens per prefill batch")
      ->check(CLI::Range(1, 4096));
  cmd->add_flag("--emit-ids", flags->emit_ids, "Write prompt_ids/generated_ids lines to stderr");
  cmd->add_option("--dump-logits", flags->dump_logits,
                  "Write the logits after the last prompt token to FILE");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating past EOS/BOS");
  cmd->callback([flags, exit_code] {
    if (absl::Status s = RunGenerate(*flags); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace shardrun
