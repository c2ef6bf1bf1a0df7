#include "coordinator/pipeline_runner.h"

#include <algorithm>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/sampler.h"

namespace shardrun {
namespace {

// One prompt's generation, advanced one step each time its logits arrive.
struct Sequence {
  size_t index = 0;
  const std::vector<int32_t>* prompt = nullptr;
  std::unique_ptr<Sampler> sampler;
  std::vector<int32_t> history;
  std::vector<float> logits;
  int pos = 0;  // positions submitted so far
  SequenceResult result;
  absl::Time started;
};

bool IsStop(const GenerateOptions& options, int32_t token) {
  return !options.ignore_stop && std::find(options.stop_tokens.begin(), options.stop_tokens.end(),
                                           token) != options.stop_tokens.end();
}

}  // namespace

absl::StatusOr<std::vector<SequenceResult>> RunPipeline(
    Coordinator& coordinator, const std::vector<std::vector<int32_t>>& prompts,
    const GenerateOptions& options, int parallel,
    const std::function<void(size_t, const SequenceResult&)>& on_done) {
  const int vocab = coordinator.model().config().vocab_size;
  const int batch = coordinator.options().max_batch;
  const int context = coordinator.context_length();
  std::vector<SequenceResult> results(prompts.size());
  std::map<uint64_t, Sequence> live;
  size_t next_prompt = 0;
  uint64_t next_id = 1000;

  // Submits the next prefill batch, or the last sampled token.
  auto advance = [&](uint64_t id, Sequence& s) -> absl::Status {
    const int prompt_size = static_cast<int>(s.prompt->size());
    if (s.pos < prompt_size) {
      const int n = std::min(batch, prompt_size - s.pos);
      const std::span<const int32_t> chunk(s.prompt->data() + s.pos, static_cast<size_t>(n));
      s.pos += n;
      return coordinator.Submit(id, s.pos - n, chunk, s.logits);
    }
    const std::span<const int32_t> last(&s.history.back(), 1);
    ++s.pos;
    return coordinator.Submit(id, s.pos - 1, last, s.logits);
  };
  auto start_next = [&]() -> absl::Status {
    const size_t i = next_prompt++;
    const std::vector<int32_t>& prompt = prompts[i];
    if (absl::Status s = CheckPrompt(prompt, context, vocab); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i + 1, ": ", s.message()));
    }
    const uint64_t id = next_id++;
    Sequence& s = live[id];
    s.index = i;
    s.prompt = &prompt;
    s.sampler = std::make_unique<Sampler>(vocab, options.sampler);
    s.history = prompt;
    s.logits.resize(static_cast<size_t>(vocab));
    s.started = absl::Now();
    s.result.prefill_tokens = static_cast<int>(prompt.size());
    return advance(id, s);
  };

  while (next_prompt < prompts.size() && static_cast<int>(live.size()) < parallel) {
    if (absl::Status st = start_next(); !st.ok()) return st;
  }
  while (!live.empty()) {
    auto ready = coordinator.WaitAny();
    if (!ready.ok()) return ready.status();
    auto it = live.find(*ready);
    if (it == live.end()) return absl::InternalError("logits for an unknown sequence");
    Sequence& s = it->second;
    if (s.pos < static_cast<int>(s.prompt->size())) {  // still prefilling
      if (absl::Status st = advance(it->first, s); !st.ok()) return st;
      continue;
    }
    const int32_t next = s.sampler->Sample(s.logits, s.history);
    s.history.push_back(next);
    s.result.generated.push_back(next);
    const bool finished = IsStop(options, next) ||
                          static_cast<int>(s.result.generated.size()) >= options.max_new_tokens ||
                          s.pos >= context;
    if (!finished) {
      if (absl::Status st = advance(it->first, s); !st.ok()) return st;
      continue;
    }
    s.result.elapsed = absl::Now() - s.started;
    coordinator.EndSequence(it->first);
    results[s.index] = std::move(s.result);
    if (on_done) on_done(s.index, results[s.index]);
    live.erase(it);
    if (next_prompt < prompts.size()) {
      if (absl::Status st = start_next(); !st.ok()) return st;
    }
  }
  return results;
}

}  // namespace shardrun
