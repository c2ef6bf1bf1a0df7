// Which contiguous part of a model one forward pass runs.
//
// A single process runs the whole model; a layer or pipeline shard runs layers [begin, end),
// the first shard with the token embedding and the last with the final norm and output head.
#ifndef SHARDRUN_ENGINE_MODEL_SLICE_H_
#define SHARDRUN_ENGINE_MODEL_SLICE_H_

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

struct ModelSlice {
  bool embedding = true;  // token ids in (else hidden states in)
  LayerRange layers;
  bool head = true;  // logits out (else hidden states out)

  static ModelSlice Whole(const ModelConfig& config) { return {true, {0, config.n_layers}, true}; }
  std::string ToString() const {
    return absl::StrFormat("%slayers %d..%d%s", embedding ? "embedding + " : "", layers.begin,
                           layers.end - 1, head ? " + head" : "");
  }
};

// OK if `slice` lies inside a model with `config` and does something.
inline absl::Status ValidateSlice(const ModelSlice& slice, const ModelConfig& config) {
  if (slice.layers.begin < 0 || slice.layers.end > config.n_layers ||
      slice.layers.begin > slice.layers.end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "slice layers %d..%d outside the model's %d layers", slice.layers.begin,
        slice.layers.end - 1, config.n_layers));
  }
  if (!slice.embedding && !slice.head && slice.layers.size() == 0) {
    return absl::InvalidArgumentError("empty model slice");
  }
  return absl::OkStatus();
}

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_MODEL_SLICE_H_
