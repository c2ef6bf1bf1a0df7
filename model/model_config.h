// Hyperparameters of a llama-architecture model, whatever file format it came from.
#ifndef SHARDRUN_MODEL_MODEL_CONFIG_H_
#define SHARDRUN_MODEL_MODEL_CONFIG_H_

#include <string>

namespace shardrun {

struct ModelConfig {
  std::string architecture = "llama";
  std::string name;
  int dim = 0;         // embedding length
  int hidden_dim = 0;  // feed-forward length (per expert for MoE models)
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // < n_heads: grouped-query attention
  int vocab_size = 0;
  int context_length = 0;  // maximum positions
  float rope_freq_base = 10000.0f;
  float rms_norm_eps = 1e-5f;
  bool tied_output = false;  // output head shares the token embedding table
  int n_experts = 0;         // 0 = dense model
  int n_experts_used = 0;

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_size(); }
  bool is_moe() const { return n_experts > 0; }
};

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_MODEL_CONFIG_H_
