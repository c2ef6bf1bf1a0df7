// Which part of a model one forward pass runs.
//
// A single process runs the whole model; a layer or pipeline shard runs layers [begin, end),
// the first shard with the token embedding and the last with the final norm and output head.
// A tensor-parallel shard runs, in each of its layers, only some attention heads and some
// feed-forward columns (and of the head only some vocabulary rows): its `split`.
#ifndef SHARDRUN_ENGINE_MODEL_SLICE_H_
#define SHARDRUN_ENGINE_MODEL_SLICE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "model/model_config.h"

namespace shardrun {

struct LayerRange {
  int begin = 0;  // first layer
  int end = 0;    // one past the last layer
  int size() const { return end - begin; }
  bool contains(int layer) const { return layer >= begin && layer < end; }
};

// A contiguous range [begin, end) of something countable (KV heads, FFN columns, experts).
struct IndexRange {
  int begin = 0;
  int end = 0;
  int size() const { return end - begin; }
  bool operator==(const IndexRange&) const = default;
};

// The part of every layer one member of a tensor-parallel group computes. The members' partial
// results after the attention output projection and after the FFN down projection are summed
// across the group (two reductions per layer); the head's vocabulary rows need no reduction.
struct TensorSplit {
  IndexRange kv_heads;     // whole KV heads, each with the query heads that share it
  IndexRange ffn_columns;  // hidden units of the feed-forward
  IndexRange vocab;        // rows of the output head: the logits this member computes
  bool operator==(const TensorSplit&) const = default;
};

struct ModelSlice {
  ModelSlice() = default;
  ModelSlice(bool embedding, LayerRange layers, bool head,
             std::optional<TensorSplit> split = std::nullopt)
      : embedding(embedding), layers(layers), head(head), split(split) {}

  bool embedding = true;  // token ids in (else hidden states in)
  LayerRange layers;
  bool head = true;                  // logits out (else hidden states out)
  std::optional<TensorSplit> split;  // none: whole layers and the whole head
  // MoE models: false when the layers' experts are held elsewhere (--type expert) and an
  // ExpertDispatcher runs them; the slice keeps attention, norms and routers.
  bool experts = true;

  static ModelSlice Whole(const ModelConfig& config) { return {true, {0, config.n_layers}, true}; }
  std::string ToString() const {
    std::string s = absl::StrFormat("%slayers %d..%d%s", embedding ? "embedding + " : "",
                                    layers.begin, layers.end - 1, head ? " + head" : "");
    if (split) {
      absl::StrAppendFormat(&s, " (kv heads %d..%d, ffn columns %d..%d", split->kv_heads.begin,
                            split->kv_heads.end, split->ffn_columns.begin, split->ffn_columns.end);
      if (head) absl::StrAppendFormat(&s, ", vocab %d..%d", split->vocab.begin, split->vocab.end);
      s += ")";
    }
    if (!experts) s += " (experts elsewhere)";
    return s;
  }
};

// OK if `slice` lies inside a model with `config` and does something.
inline absl::Status ValidateSlice(const ModelSlice& slice, const ModelConfig& config) {
  if (slice.layers.begin < 0 || slice.layers.end > config.n_layers ||
      slice.layers.begin > slice.layers.end) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slice layers %d..%d outside the model's %d layers", slice.layers.begin,
                        slice.layers.end - 1, config.n_layers));
  }
  if (!slice.embedding && !slice.head && slice.layers.size() == 0) {
    return absl::InvalidArgumentError("empty model slice");
  }
  if (slice.split) {
    const TensorSplit& t = *slice.split;
    auto inside = [](IndexRange r, int n) {
      return r.begin >= 0 && r.begin <= r.end && r.end <= n;
    };
    if (!inside(t.kv_heads, config.n_kv_heads) || !inside(t.ffn_columns, config.hidden_dim) ||
        !inside(t.vocab, config.vocab_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor split (kv heads %d..%d, ffn columns %d..%d, vocab %d..%d) outside the model's "
          "%d kv heads, %d ffn columns, %d vocabulary rows",
          t.kv_heads.begin, t.kv_heads.end, t.ffn_columns.begin, t.ffn_columns.end, t.vocab.begin,
          t.vocab.end, config.n_kv_heads, config.hidden_dim, config.vocab_size));
    }
    if (config.is_moe()) {
      return absl::UnimplementedError(
          "tensor splits of MoE models are not supported: use --type expert (or layer)");
    }
  }
  return absl::OkStatus();
}

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_MODEL_SLICE_H_
