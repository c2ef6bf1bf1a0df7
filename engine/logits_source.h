// What generation needs from a model: the logits after a run of tokens.
//
// A single process implements it with one StageForward over the whole model (LocalModel);
// the coordinator implements it with a chain of remote shards. The generation loop and the
// sampler do not know which.
#ifndef SHARDRUN_ENGINE_LOGITS_SOURCE_H_
#define SHARDRUN_ENGINE_LOGITS_SOURCE_H_

#include <cstdint>
#include <span>

#include "absl/status/status.h"

namespace shardrun {

class LogitsSource {
 public:
  virtual ~LogitsSource() = default;
  // Feeds tokens at positions pos0 .. pos0+n-1 (1 <= n <= max_batch()) and writes the
  // logits after the last one (vocab_size floats).
  virtual absl::Status Compute(int pos0, std::span<const int32_t> tokens,
                               std::span<float> logits) = 0;
  virtual int max_batch() const = 0;
  virtual int context_length() const = 0;
  virtual int vocab_size() const = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_LOGITS_SOURCE_H_
