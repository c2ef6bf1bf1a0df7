// What every generating command shares: the generation options, turning the prompt into
// ids, streaming tokens to stdout and the closing rate lines. The model behind it is any
// LogitsSource: this process (`generate`) or a cluster of workers (`--shards`, `coordinator`).
#ifndef SHARDRUN_CLI_GENERATION_H_
#define SHARDRUN_CLI_GENERATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "engine/generator.h"
#include "engine/logits_source.h"
#include "model/model_file.h"
#include "model/tokenizer.h"

namespace shardrun {

struct GenerationFlags {
  std::string tokenizer;
  std::string prompt;
  std::string prompt_ids;
  int n_predict = 256;
  float temperature = 0.8f;
  float top_p = 0.9f;
  int top_k = 0;
  float repeat_penalty = 1.0f;
  int64_t seed = -1;
  int ctx_size = 0;
  int batch_size = 64;
  bool emit_ids = false;
  bool ignore_eos = false;
  std::string dump_logits;
};

// Adds -p, -n, --temp, --top-p, --top-k, --repeat-penalty, --seed, -c, -b, --prompt-ids,
// --emit-ids, --dump-logits, --ignore-eos, --tokenizer/-z to `cmd`.
void AddGenerationOptions(CLI::App* cmd, GenerationFlags* flags);

// The prompt's token ids: --prompt-ids as given, else the prompt text through `tokenizer`.
absl::StatusOr<std::vector<int32_t>> PromptIds(const GenerationFlags& flags,
                                               const std::optional<Tokenizer>& tokenizer,
                                               const std::string& prompt_text);

// The generation options the flags describe for `file` (stop tokens: EOS, and BOS for
// llama2.c checkpoints as run.c does).
GenerateOptions MakeGenerateOptions(const GenerationFlags& flags, const ModelFile& file,
                                    const std::optional<Tokenizer>& tokenizer, int context_length);

// The text StreamGeneration prints for `prompt` and `generated`: the prompt echoed, every
// generated piece but a stop token, and a final newline.
std::string RenderText(const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated,
                       const GenerateOptions& options, const Tokenizer* tokenizer);

// Generates after `prompt`, streaming text (or ids without a tokenizer) to stdout, then
// writes `prefill:`/`decode:` lines (and with --emit-ids the id lines) to stderr.
absl::Status StreamGeneration(LogitsSource& model, const ModelFile& file,
                              const GenerationFlags& flags,
                              const std::optional<Tokenizer>& tokenizer,
                              const std::vector<int32_t>& prompt);

}  // namespace shardrun

#endif  // SHARDRUN_CLI_GENERATION_H_
