#include "engine/sampler.h"

#include <algorithm>
#include <cmath>

namespace shardrun {
namespace {

// run.c's softmax, in float, in this order.
void Softmax(std::span<float> x) {
  float max_val = x[0];
  for (size_t i = 1; i < x.size(); ++i) max_val = std::max(max_val, x[i]);
  float sum = 0.0f;
  for (float& v : x) {
    v = std::exp(v - max_val);
    sum += v;
  }
  for (float& v : x) v /= sum;
}

// run.c's sample_mult: inverse CDF over the whole distribution.
int32_t SampleMult(std::span<const float> probs, float coin) {
  float cdf = 0.0f;
  for (size_t i = 0; i < probs.size(); ++i) {
    cdf += probs[i];
    if (coin < cdf) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(probs.size()) - 1;
}

}  // namespace

int32_t Argmax(std::span<const float> values) {
  int32_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

uint32_t Sampler::RandomU32(uint64_t* state) {
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return static_cast<uint32_t>((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float Sampler::RandomF32(uint64_t* state) {
  return static_cast<float>(RandomU32(state) >> 8) / 16777216.0f;
}

Sampler::Sampler(int vocab_size, const SamplerOptions& options)
    : options_(options), rng_state_(options.seed) {
  candidates_.resize(static_cast<size_t>(vocab_size));
}

int32_t Sampler::Sample(std::span<float> logits, std::span<const int32_t> history) {
  if (options_.repeat_penalty != 1.0f) ApplyRepeatPenalty(logits, history);
  if (options_.temperature == 0.0f) return Argmax(logits);
  for (float& v : logits) v /= options_.temperature;
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < logits.size()) {
    ApplyTopK(logits);
  }
  Softmax(logits);
  const float coin = RandomF32(&rng_state_);
  if (options_.top_p <= 0.0f || options_.top_p >= 1.0f) return SampleMult(logits, coin);
  return SampleTopP(logits, coin);
}

void Sampler::ApplyRepeatPenalty(std::span<float> logits, std::span<const int32_t> history) const {
  const size_t n = std::min(history.size(), static_cast<size_t>(options_.repeat_last_n));
  // Each distinct token is penalised once, however often it occurs (llama.cpp's rule).
  for (size_t i = history.size() - n; i < history.size(); ++i) {
    const int32_t token = history[i];
    if (token < 0 || static_cast<size_t>(token) >= logits.size()) continue;
    if (std::find(history.begin() + static_cast<std::ptrdiff_t>(history.size() - n),
                  history.begin() + static_cast<std::ptrdiff_t>(i),
                  token) != history.begin() + static_cast<std::ptrdiff_t>(i)) {
      continue;  // already penalised
    }
    float& v = logits[static_cast<size_t>(token)];
    v = v > 0 ? v / options_.repeat_penalty : v * options_.repeat_penalty;
  }
}

void Sampler::ApplyTopK(std::span<float> logits) {
  // Everything below the k-th largest logit is removed (ties at the boundary are kept).
  for (size_t i = 0; i < logits.size(); ++i) {
    candidates_[i] = {logits[i], static_cast<int32_t>(i)};
  }
  const auto kth = candidates_.begin() + (options_.top_k - 1);
  std::nth_element(candidates_.begin(), kth, candidates_.begin() + logits.size(),
                   [](const ProbIndex& a, const ProbIndex& b) { return a.prob > b.prob; });
  const float threshold = kth->prob;
  for (float& v : logits) {
    if (v < threshold) v = -INFINITY;
  }
}

// run.c's sample_topp: keep tokens with probability >= (1 - top_p) / (n - 1), sort them by
// probability (descending; glibc's qsort is a stable merge sort here, so ties keep index
// order), truncate where the cumulative probability first exceeds top_p, draw from the rest.
int32_t Sampler::SampleTopP(std::span<const float> probs, float coin) {
  const float cutoff = (1.0f - options_.top_p) / static_cast<float>(probs.size() - 1);
  size_t n0 = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] >= cutoff) candidates_[n0++] = {probs[i], static_cast<int32_t>(i)};
  }
  std::stable_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n0),
                   [](const ProbIndex& a, const ProbIndex& b) { return a.prob > b.prob; });
  float cumulative = 0.0f;
  size_t last = n0 - 1;
  for (size_t i = 0; i < n0; ++i) {
    cumulative += candidates_[i].prob;
    if (cumulative > options_.top_p) {
      last = i;
      break;
    }
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].prob;
    if (r < cdf) return candidates_[i].index;
  }
  return candidates_[last].index;
}

}  // namespace shardrun
