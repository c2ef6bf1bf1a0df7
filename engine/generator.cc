#include "engine/generator.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace shardrun {

absl::Status CheckPrompt(std::span<const int32_t> prompt, int context, int vocab_size) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (static_cast<int>(prompt.size()) > context) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the prompt has %d tokens; the context holds %d", prompt.size(), context));
  }
  for (int32_t t : prompt) {
    if (t < 0 || t >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("prompt token %d is outside the vocabulary (size %d)", t, vocab_size));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Generator::Generate(std::span<const int32_t> prompt,
                                                         const GenerateOptions& options,
                                                         const GenerateCallbacks& callbacks,
                                                         GenerateStats* stats) {
  GenerateStats local_stats;
  if (stats == nullptr) stats = &local_stats;
  *stats = GenerateStats{};
  const int context = model_.context_length();
  if (absl::Status s = CheckPrompt(prompt, context, model_.vocab_size()); !s.ok()) return s;

  std::vector<float> logits(static_cast<size_t>(model_.vocab_size()));
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  history.reserve(prompt.size() + static_cast<size_t>(std::max(options.max_new_tokens, 0)));

  // Prefill in batches; only the last batch's logits matter.
  const absl::Time prefill_start = absl::Now();
  int pos = 0;
  while (pos < static_cast<int>(prompt.size())) {
    const int n = std::min<int>(model_.max_batch(), static_cast<int>(prompt.size()) - pos);
    if (absl::Status s = model_.Compute(pos, prompt.subspan(pos, n), logits); !s.ok()) return s;
    pos += n;
  }
  stats->prefill_tokens = pos;
  stats->prefill_time = absl::Now() - prefill_start;
  if (callbacks.on_prompt_logits) callbacks.on_prompt_logits(logits);

  Sampler sampler(model_.vocab_size(), options.sampler);
  std::vector<int32_t> generated;
  generated.reserve(history.capacity());
  const absl::Time decode_start = absl::Now();
  for (int i = 0; i < options.max_new_tokens; ++i) {
    const int32_t next = sampler.Sample(logits, history);
    generated.push_back(next);
    history.push_back(next);
    if (callbacks.on_token && !callbacks.on_token(next)) break;
    const bool is_stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) !=
                         options.stop_tokens.end();
    if (is_stop && !options.ignore_stop) break;
    if (i + 1 == options.max_new_tokens || pos >= context) break;
    if (absl::Status s = model_.Compute(pos, std::span<const int32_t>(&next, 1), logits); !s.ok()) {
      return s;
    }
    ++pos;
    ++stats->decode_tokens;
  }
  stats->decode_time = absl::Now() - decode_start;
  return generated;
}

}  // namespace shardrun
