#include "engine/stage_forward.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/tensor_split.h"

namespace shardrun {

StageForward::StageForward(const ModelConfig& config, const ModelSlice& slice, Backend& backend,
                           int max_batch, PartialSumReducer* reducer)
    : config_(config),
      slice_(slice),
      backend_(backend),
      max_batch_(max_batch),
      reducer_(reducer),
      n_heads_(config.n_heads),
      n_kv_heads_(config.n_kv_heads),
      hidden_dim_(config.hidden_dim),
      vocab_rows_(config.vocab_size) {
  if (slice.split) {
    n_kv_heads_ = slice.split->kv_heads.size();
    n_heads_ = QueryHeads(config, slice.split->kv_heads).size();
    hidden_dim_ = slice.split->ffn_columns.size();
    vocab_rows_ = slice.split->vocab.size();
  }
}

absl::StatusOr<std::unique_ptr<StageForward>> StageForward::Create(const ModelFile& model,
                                                                   const ModelSlice& slice,
                                                                   Backend& backend, int max_batch,
                                                                   PartialSumReducer* reducer) {
  if (max_batch < 1) return absl::InvalidArgumentError("max_batch must be at least 1");
  if (absl::Status s = ValidateSlice(slice, model.config()); !s.ok()) return s;
  if (slice.split && reducer == nullptr && slice.layers.size() > 0) {
    return absl::InvalidArgumentError("a tensor-split slice needs a reducer for its partial sums");
  }
  std::unique_ptr<StageForward> stage(
      new StageForward(model.config(), slice, backend, max_batch, reducer));
  auto weights = SliceWeights::Load(model, slice, backend);
  if (!weights.ok()) return weights.status();
  stage->weights_ = *std::move(weights);
  if (absl::Status s = stage->AllocateActivations(); !s.ok()) return s;
  return stage;
}

absl::Status StageForward::AllocateActivations() {
  const int64_t b = max_batch_;
  struct Request {
    std::unique_ptr<DeviceBuffer>* buffer;
    int64_t floats;
  };
  const Request requests[] = {
      {&x_, b * config_.dim},
      {&xb_, b * config_.dim},
      {&q_, b * config_.dim},
      {&k_, b * config_.kv_dim()},
      {&v_, b * config_.kv_dim()},
      {&att_, b * config_.dim},
      {&gate_, b * config_.hidden_dim},
      {&up_, b * config_.hidden_dim},
      {&logits_, slice_.head ? vocab_rows_ : 0},
      {&router_, config_.is_moe() ? b * config_.n_experts : 0},
      {&ex_in_, config_.is_moe() ? config_.dim : 0},
      {&ex_out_, config_.is_moe() ? config_.dim : 0},
      {&moe_out_, config_.is_moe() ? b * config_.dim : 0},
  };
  for (const Request& r : requests) {
    if (r.floats == 0) continue;
    auto buffer = backend_.Allocate(r.floats);
    if (!buffer.ok()) return buffer.status();
    *r.buffer = *std::move(buffer);
  }
  if (slice_.split) partial_host_.resize(static_cast<size_t>(b * config_.dim));
  if (config_.is_moe()) {
    const size_t calls = static_cast<size_t>(b * config_.n_experts_used);
    router_host_.resize(static_cast<size_t>(b * config_.n_experts));
    ranked_.resize(static_cast<size_t>(config_.n_experts));
    expert_calls_.resize(calls);
    expert_weights_.resize(calls);
    if (!slice_.experts) {
      expert_in_host_.resize(static_cast<size_t>(b * config_.dim));
      expert_out_host_.resize(calls * config_.dim);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<KvCache> StageForward::NewKvCache(int context_length) const {
  if (context_length <= 0 || context_length > config_.context_length) {
    context_length = config_.context_length;
  }
  return KvCache::Create(backend_, slice_.layers, context_length,
                         n_kv_heads_ * config_.head_size());
}

size_t StageForward::OutputSize(int n) const {
  return slice_.head ? static_cast<size_t>(vocab_rows_)
                     : static_cast<size_t>(n) * static_cast<size_t>(config_.dim);
}

absl::Status StageForward::Forward(KvCache& cache, int pos0, StageInput input,
                                   std::span<float> output) {
  const int n =
      static_cast<int>(slice_.embedding ? input.tokens.size() : input.hidden.size() / config_.dim);
  if (n < 1 || n > max_batch_ || pos0 < 0 || pos0 + n > cache.context_length()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("forward of %d tokens at position %d: batch limit %d, context %d", n, pos0,
                        max_batch_, cache.context_length()));
  }
  if (output.size() < OutputSize(n)) return absl::InvalidArgumentError("output too small");
  const ModelConfig& c = config_;
  const int dim = c.dim;
  const float eps = c.rms_norm_eps;
  const AttentionShape shape{n, pos0, n_heads_, n_kv_heads_, c.head_size(), cache.context_length()};
  const int64_t n_dim = static_cast<int64_t>(n) * dim;
  Backend& be = backend_;

  if (slice_.embedding) {
    for (int32_t t : input.tokens) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrFormat("token id %d outside vocabulary", t));
      }
    }
    be.Embed(*x_, *weights_.token_embedding, input.tokens);
  } else {
    be.Write(*x_, 0, input.hidden.first(static_cast<size_t>(n) * dim));
  }

  for (int l = slice_.layers.begin; l < slice_.layers.end; ++l) {
    const LayerWeights& w = weights_.layers[l - slice_.layers.begin];
    // Attention: x += wo · attention(rope(wq·norm(x)), rope(wk·norm(x)), wv·norm(x))
    be.RmsNorm(*xb_, *x_, *w.attn_norm, n, eps);
    if (n_heads_ > 0) {
      be.MatMul(*q_, *w.wq, *xb_, n);
      be.MatMul(*k_, *w.wk, *xb_, n);
      be.MatMul(*v_, *w.wv, *xb_, n);
      be.Rope(*q_, n, n_heads_, c.head_size(), pos0, c.rope_freq_base);
      be.Rope(*k_, n, n_kv_heads_, c.head_size(), pos0, c.rope_freq_base);
      be.Attention(*att_, *q_, *k_, *v_, cache.keys(l), cache.values(l), shape);
      be.MatMul(*xb_, *w.wo, *att_, n);
    } else {
      be.Zero(*xb_, n_dim);  // a tensor-parallel member without heads adds nothing here
    }
    if (slice_.split) {
      if (absl::Status s = Reduce({l, 0}, n); !s.ok()) return s;
    }
    be.Add(*x_, *xb_, n_dim);
    // Feed-forward: x += w_down · (silu(w_gate·norm(x)) * w_up·norm(x))
    be.RmsNorm(*xb_, *x_, *w.ffn_norm, n, eps);
    if (c.is_moe()) {  // the same, per token, summed over its selected experts
      if (absl::Status s = MoeFeedForward(l, w, n); !s.ok()) return s;
      be.Add(*x_, *moe_out_, n_dim);
      continue;
    }
    if (hidden_dim_ > 0) {
      be.MatMul(*gate_, *w.ffn_gate, *xb_, n);
      be.MatMul(*up_, *w.ffn_up, *xb_, n);
      be.SwiGlu(*gate_, *up_, static_cast<int64_t>(n) * hidden_dim_);
      be.MatMul(*xb_, *w.ffn_down, *gate_, n);
    } else {
      be.Zero(*xb_, n_dim);
    }
    if (slice_.split) {
      if (absl::Status s = Reduce({l, 1}, n); !s.ok()) return s;
    }
    be.Add(*x_, *xb_, n_dim);
  }

  if (slice_.head) {  // logits of the last token only
    be.Copy(*xb_, 0, *x_, static_cast<int64_t>(n - 1) * dim, dim);
    be.RmsNorm(*xb_, *xb_, *weights_.output_norm, 1, eps);
    be.MatMul(*logits_, *weights_.output, *xb_, 1);
  }
  if (absl::Status s = be.Synchronize(); !s.ok()) return s;
  if (slice_.head) {
    be.Read(*logits_, 0, output.first(static_cast<size_t>(vocab_rows_)));
  } else {
    be.Read(*x_, 0, output.first(static_cast<size_t>(n_dim)));
  }
  return absl::OkStatus();
}

absl::Status StageForward::Reduce(ReductionPoint point, int n) {
  // The partial sums go through the host: the group's members are other processes.
  if (absl::Status s = backend_.Synchronize(); !s.ok()) return s;
  const std::span<float> partial(partial_host_.data(), static_cast<size_t>(n) * config_.dim);
  backend_.Read(*xb_, 0, partial);
  if (absl::Status s = reducer_->AllReduce(point, partial); !s.ok()) return s;
  backend_.Write(*xb_, 0, partial);
  return absl::OkStatus();
}

// llama.cpp's routing for the llama architecture: softmax over all router logits, the
// n_experts_used most probable experts, their probabilities renormalised to sum to one.
absl::Status StageForward::MoeFeedForward(int layer, const LayerWeights& w, int n) {
  Backend& be = backend_;
  const int dim = config_.dim;
  const int n_experts = config_.n_experts;
  const int k = config_.n_experts_used;
  be.MatMul(*router_, *w.router, *xb_, n);
  // The choice of experts happens on the host, so the router logits come back here.
  if (absl::Status s = be.Synchronize(); !s.ok()) return s;
  be.Read(*router_, 0, std::span<float>(router_host_.data(), static_cast<size_t>(n) * n_experts));
  for (int t = 0; t < n; ++t) {
    const float* logits = router_host_.data() + static_cast<size_t>(t) * n_experts;
    const float max = *std::max_element(logits, logits + n_experts);
    float sum = 0.0f;
    for (int e = 0; e < n_experts; ++e) {
      ranked_[e] = {std::exp(logits[e] - max), e};
      sum += ranked_[e].first;
    }
    std::partial_sort(ranked_.begin(), ranked_.begin() + k, ranked_.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    float chosen = 0.0f;
    for (int i = 0; i < k; ++i) chosen += ranked_[i].first / sum;
    for (int i = 0; i < k; ++i) {
      expert_calls_[static_cast<size_t>(t) * k + i] = {t, ranked_[i].second};
      expert_weights_[static_cast<size_t>(t) * k + i] = ranked_[i].first / sum / chosen;
    }
  }
  const size_t n_calls = static_cast<size_t>(n) * k;
  be.Zero(*moe_out_, static_cast<int64_t>(n) * dim);
  if (!slice_.experts) {
    // The experts live elsewhere: their outputs come back exact and are added as below.
    if (dispatcher_ == nullptr) {
      return absl::FailedPreconditionError("a slice without its experts needs a dispatcher");
    }
    const std::span<float> in(expert_in_host_.data(), static_cast<size_t>(n) * dim);
    be.Read(*xb_, 0, in);
    const std::span<float> out(expert_out_host_.data(), n_calls * dim);
    if (absl::Status s = dispatcher_->Run(
            layer, std::span<const ExpertCall>(expert_calls_.data(), n_calls), in, out);
        !s.ok()) {
      return s;
    }
    for (size_t i = 0; i < n_calls; ++i) {
      be.Write(*ex_out_, 0, out.subspan(i * dim, static_cast<size_t>(dim)));
      be.AddScaled(*moe_out_, static_cast<int64_t>(expert_calls_[i].token) * dim, *ex_out_, dim,
                   expert_weights_[i]);
    }
    return absl::OkStatus();
  }
  for (size_t i = 0; i < n_calls; ++i) {
    const ExpertCall& call = expert_calls_[i];
    const ExpertWeights& expert = w.experts[call.expert];
    if (i % k == 0) be.Copy(*ex_in_, 0, *xb_, static_cast<int64_t>(call.token) * dim, dim);
    be.MatMul(*gate_, *expert.gate, *ex_in_, 1);
    be.MatMul(*up_, *expert.up, *ex_in_, 1);
    be.SwiGlu(*gate_, *up_, config_.hidden_dim);
    be.MatMul(*ex_out_, *expert.down, *gate_, 1);
    be.AddScaled(*moe_out_, static_cast<int64_t>(call.token) * dim, *ex_out_, dim,
                 expert_weights_[i]);
  }
  return absl::OkStatus();
}

}  // namespace shardrun
