// Picks the next token from the logits.
//
// Greedy (temperature 0) takes the first maximum. Otherwise the logits are divided by the
// temperature, softmaxed, and a token is drawn with llama2.c run.c's xorshift generator and
// its exact algorithm (full distribution when top_p is outside (0, 1), nucleus sampling
// otherwise), so that run.c's seed reproduces run.c's story. Top-k and a repetition penalty
// are extra options (off by default; with them, results no longer match run.c).
#ifndef SHARDRUN_ENGINE_SAMPLER_H_
#define SHARDRUN_ENGINE_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

namespace shardrun {

struct SamplerOptions {
  float temperature = 0.0f;
  float top_p = 0.9f;
  int top_k = 0;                // 0 = off
  float repeat_penalty = 1.0f;  // 1 = off; llama.cpp's rule: logit /= p if > 0, else *= p
  int repeat_last_n = 64;       // tokens the penalty looks back over
  uint64_t seed = 0;
};

class Sampler {
 public:
  Sampler(int vocab_size, const SamplerOptions& options);

  // Returns the next token id. `logits` is overwritten (scaled, softmaxed). `history` is the
  // sequence so far (for the repetition penalty).
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history);

  // run.c's generator, exposed for tests.
  static uint32_t RandomU32(uint64_t* state);
  static float RandomF32(uint64_t* state);

 private:
  struct ProbIndex {
    float prob;
    int32_t index;
  };
  void ApplyRepeatPenalty(std::span<float> logits, std::span<const int32_t> history) const;
  void ApplyTopK(std::span<float> logits);
  int32_t SampleTopP(std::span<const float> probs, float coin);

  SamplerOptions options_;
  uint64_t rng_state_;
  std::vector<ProbIndex> candidates_;  // sized once: no allocation per token
};

// Index of the first maximum.
int32_t Argmax(std::span<const float> values);

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_SAMPLER_H_
