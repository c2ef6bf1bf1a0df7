// stories260K.bin's hyperparameters as its README gives them (float32, classifier tied to the
// embedding), for tests that plan against its shape without reading the file.
#ifndef SHARDRUN_TESTS_STORIES_CONFIG_H_
#define SHARDRUN_TESTS_STORIES_CONFIG_H_

#include "model/model_config.h"

namespace shardrun::testing {

inline ModelConfig StoriesConfig() {
  ModelConfig c;
  c.name = "stories260K";
  c.dim = 64;
  c.hidden_dim = 172;
  c.n_layers = 5;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.vocab_size = 512;
  c.context_length = 512;
  c.tied_output = true;
  return c;
}

}  // namespace shardrun::testing

#endif  // SHARDRUN_TESTS_STORIES_CONFIG_H_
