#include "cli/generation.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/generator.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

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

void Write(const std::string& bytes) { std::fwrite(bytes.data(), 1, bytes.size(), stdout); }

}  // namespace

void AddGenerationOptions(CLI::App* cmd, GenerationFlags* flags) {
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
  cmd->add_option("-c,--ctx-size", flags->ctx_size, "Context positions (default: the model's)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-b,--batch-size", flags->batch_size, "Prompt tokens per prefill batch")
      ->check(CLI::Range(1, 4096));
  cmd->add_flag("--emit-ids", flags->emit_ids, "Write prompt_ids/generated_ids lines to stderr");
  cmd->add_option("--dump-logits", flags->dump_logits,
                  "Write the logits after the last prompt token to FILE");
  cmd->add_flag("--ignore-eos", flags->ignore_eos, "Keep generating past EOS/BOS");
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerationFlags& flags,
                                               const std::optional<Tokenizer>& tokenizer,
                                               const std::string& prompt_text) {
  if (!flags.prompt_ids.empty()) return ParseIds(flags.prompt_ids);
  if (!tokenizer.has_value()) {
    return absl::InvalidArgumentError(
        "the model has no vocabulary: give --tokenizer FILE or --prompt-ids");
  }
  return tokenizer->Encode(prompt_text, /*add_bos=*/true, /*add_eos=*/false);
}

GenerateOptions MakeGenerateOptions(const GenerationFlags& flags, const ModelFile& file,
                                    const std::optional<Tokenizer>& tokenizer, int context_length) {
  GenerateOptions options;
  options.max_new_tokens = flags.n_predict < 0 ? context_length : flags.n_predict;
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
  options.stop_tokens.push_back(tokenizer ? tokenizer->eos_id() : 2);
  // run.c stops when it samples BOS; llama2.c checkpoints keep that behaviour.
  if (file.format() != ModelFormat::kGguf) {
    options.stop_tokens.push_back(tokenizer ? tokenizer->bos_id() : 1);
  }
  return options;
}

namespace {

bool Printed(const GenerateOptions& options, int32_t token) {
  return options.ignore_stop || std::find(options.stop_tokens.begin(), options.stop_tokens.end(),
                                          token) == options.stop_tokens.end();
}

std::string PieceText(const Tokenizer* tok, int32_t prev, int32_t token) {
  return tok != nullptr ? tok->DecodePiece(prev, token) : absl::StrCat(" ", token);
}

}  // namespace

std::string RenderText(const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated,
                       const GenerateOptions& options, const Tokenizer* tokenizer) {
  std::string text;
  int32_t prev = prompt.empty() ? 0 : prompt[0];
  if (tokenizer != nullptr) {
    for (size_t i = 1; i < prompt.size(); ++i) {
      text += tokenizer->DecodePiece(prompt[i - 1], prompt[i]);
    }
    if (!prompt.empty()) prev = prompt.back();
  }
  for (int32_t token : generated) {
    if (Printed(options, token)) text += PieceText(tokenizer, prev, token);
    prev = token;
  }
  return text + "\n";
}

absl::Status StreamGeneration(LogitsSource& model, const ModelFile& file,
                              const GenerationFlags& flags,
                              const std::optional<Tokenizer>& tokenizer,
                              const std::vector<int32_t>& prompt) {
  const GenerateOptions options =
      MakeGenerateOptions(flags, file, tokenizer, model.context_length());
  const Tokenizer* tok = tokenizer.has_value() ? &*tokenizer : nullptr;

  // Echo the prompt, then stream each token as it is sampled.
  int32_t prev = prompt.empty() ? 0 : prompt[0];
  if (tok != nullptr) {
    for (size_t i = 1; i < prompt.size(); ++i) Write(tok->DecodePiece(prompt[i - 1], prompt[i]));
    if (!prompt.empty()) prev = prompt.back();
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
    if (Printed(options, token)) {
      Write(PieceText(tok, prev, token));
      std::fflush(stdout);
    }
    prev = token;
    return true;
  };

  GenerateStats stats;
  auto generated = Generator(model).Generate(prompt, options, callbacks, &stats);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (!generated.ok()) return generated.status();
  if (!logits_status.ok()) return logits_status;
  if (flags.emit_ids) {
    std::fprintf(stderr, "prompt_ids: %s\ngenerated_ids: %s\n", absl::StrJoin(prompt, ",").c_str(),
                 absl::StrJoin(*generated, ",").c_str());
  }
  PrintRate("prefill", stats.prefill_tokens, stats.prefill_time);
  PrintRate("decode", stats.decode_tokens, stats.decode_time);
  return absl::OkStatus();
}

}  // namespace shardrun
