// The generation loop: prefill the prompt, then sample and feed back one token at a time.
#ifndef SHARDRUN_ENGINE_GENERATOR_H_
#define SHARDRUN_ENGINE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/logits_source.h"
#include "engine/sampler.h"

namespace shardrun {

struct GenerateOptions {
  int max_new_tokens = 256;          // llama.cpp's -n: tokens generated after the prompt
  std::vector<int32_t> stop_tokens;  // EOS (and BOS for llama2.c checkpoints)
  bool ignore_stop = false;          // --ignore-eos
  SamplerOptions sampler;
};

struct GenerateStats {
  int prefill_tokens = 0;
  absl::Duration prefill_time;
  int decode_tokens = 0;  // forward passes after the prompt
  absl::Duration decode_time;
};

struct GenerateCallbacks {
  // Called once with the logits after the last prompt token (before sampling changes them).
  std::function<void(std::span<const float>)> on_prompt_logits;
  // Called for every sampled token, stop token included; return false to stop early.
  std::function<bool(int32_t)> on_token;
};

// Why a model of `context` positions and `vocab_size` ids cannot generate after `prompt` (no
// tokens, more than the context holds, an id outside the vocabulary): InvalidArgument, a fault
// of the prompt alone. OK when it can.
absl::Status CheckPrompt(std::span<const int32_t> prompt, int context, int vocab_size);

class Generator {
 public:
  explicit Generator(LogitsSource& model) : model_(model) {}

  // Generates after `prompt` (which must hold at least one token, usually BOS first) and
  // returns the sampled ids. Stops after max_new_tokens, at a stop token, or when the
  // context is full.
  absl::StatusOr<std::vector<int32_t>> Generate(std::span<const int32_t> prompt,
                                                const GenerateOptions& options,
                                                const GenerateCallbacks& callbacks,
                                                GenerateStats* stats);

 private:
  LogitsSource& model_;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_GENERATOR_H_
