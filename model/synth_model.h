// Synthetic llama models: GGUF files of any shape and weight type with seeded pseudo-random
// weights and a generated SentencePiece vocabulary, for tests and benchmarks that need a model
// of a given size without downloading one (`shardrun synth`).
//
// The bytes depend only on the spec: the same spec and seed give a byte-identical file on
// every platform and for any thread count. Each tensor's values come from a counter-based
// generator keyed by (seed, tensor name), so any element can be computed on its own:
//   key    = Mix64(Mix64(seed) ^ Fnv1a64(tensor name))
//   bits_k = Mix64(key + (k + 1) * 0x9e3779b97f4a7c15)  (splitmix64's k-th output), split
//            into hi (upper 32 bits) and lo (lower 32 bits)
//   u1     = float(int32(hi >> 1 | 1)) / 2^31, in (0, 1]
//   theta  = 2 pi lo / 2^32, using lo's top 25 bits
//   z_2k   = sqrt(-2 ln u1) cos(theta),  z_2k+1 = sqrt(-2 ln u1) sin(theta)  (Box-Muller)
// with Mix64 splitmix64's finaliser, and ln, cos, sin fixed polynomials evaluated in float
// (synth_model.cc), not libm, whose last bits differ between C libraries. |z| < 6.6.
// Element i of a tensor (GGUF order, row-major) is mean + sd * z_i in float: mean 0 and sd
// `std` for weights, mean 1 and sd 0.02 for RMSNorm gains. Quantized types are then produced
// row by row with QuantizeRow (kernels/quantize.h).
#ifndef SHARDRUN_MODEL_SYNTH_MODEL_H_
#define SHARDRUN_MODEL_SYNTH_MODEL_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor_type.h"
#include "model/vocabulary.h"

namespace shardrun {

// Changes whenever the bytes written for a spec change (generator, vocabulary, layout), so a
// cache of synthetic models (the CLI's built-in default) can tell an outdated file. Written
// as `synth.version`.
inline constexpr uint32_t kSynthVersion = 1;

// The defaults are the `tiny` preset.
struct SynthSpec {
  std::string name = "synthetic-tiny";  // general.name
  int dim = 288;
  int hidden_dim = 768;  // per expert for MoE models
  int n_layers = 6;
  int n_heads = 6;
  int n_kv_heads = 2;
  int vocab_size = 2048;
  int context_length = 512;
  float rope_freq_base = 10000.0f;
  float rms_eps = 1e-5f;
  // Type of the 2-D weights (and stacked expert weights); norms and the MoE router are f32.
  // A Q8_0/Q4_0 tensor whose rows are not a multiple of 32 values is stored as f32 instead
  // (llama.cpp's quantizer also keeps such tensors unquantized), with a warning.
  TensorType weight_type = TensorType::kQ8_0;
  bool tied_output = false;  // true: no output.weight, the head reuses token_embd
  int n_experts = 0;         // > 0: Mixtral-style MoE feed-forward
  int n_experts_used = 0;
  uint64_t seed = 1;
  float std = 0.02f;
};

// The `tiny` preset: the built-in default model of the CLI.
SynthSpec DefaultModelSpec();
// "tiny", "mini", "tinyllama", "moe-mini".
absl::StatusOr<SynthSpec> SynthPreset(std::string_view name);
std::vector<std::string_view> SynthPresetNames();

// Positive sizes, dim % n_heads == 0, n_heads % n_kv_heads == 0, an even head size, a
// supported weight type, a vocabulary that fits the specials and byte tokens, ...
absl::Status ValidateSynthSpec(const SynthSpec& spec);

// The vocabulary needs <unk>, <s>, </s> and the 256 byte-fallback tokens <0x00>..<0xFF>:
// byte fallback is what lets any text, in any script, tokenize (and llama.cpp's SentencePiece
// tokenizer needs the byte tokens), so smaller vocabularies are refused.
inline constexpr int kMinSynthVocab = 3 + 256;
inline constexpr int kMaxSynthVocab = 1 << 20;

// ids 0..2 <unk> <s> </s>, 3..258 the byte tokens, then normal pieces: "▁" and the printable
// ASCII characters, "▁" + each letter, pieces learnt by byte-pair merging over a built-in
// list of common English words (in merge order), then "▁"-prefixed and bare lowercase
// letter strings of increasing length. Scores decrease with the id, and every multi-character
// piece is the concatenation of two earlier pieces, so SentencePiece merging reaches it.
// `vocab_size` must be within [kMinSynthVocab, kMaxSynthVocab].
absl::StatusOr<Vocabulary> SynthVocabulary(int vocab_size);

enum class SynthInit {
  kWeight,    // normal(0, std)
  kNormGain,  // normal(1, 0.02)
};

struct SynthTensor {
  std::string name;
  TensorType type;
  std::vector<int64_t> shape;  // GGUF order: shape[0] is the row length
  SynthInit init;

  int64_t cols() const { return shape[0]; }
  int64_t rows() const;
};

// The tensors of `spec` (which must be valid) in file order, with their stored types.
std::vector<SynthTensor> SynthTensorPlan(const SynthSpec& spec);

// Standard normal values first, first + 1, ... of the stream named `stream`.
void SynthNormals(uint64_t seed, std::string_view stream, int64_t first, std::span<float> out);

// Float values of `tensor`'s elements first, first + 1, ... (before conversion to its type).
void SynthTensorValues(const SynthSpec& spec, const SynthTensor& tensor, int64_t first,
                       std::span<float> out);

// Writes the model as GGUF v3 (via `path`.tmp). `threads` generate and quantize rows
// (0: one per hardware thread); the bytes do not depend on it.
absl::Status WriteSynthModel(const SynthSpec& spec, const std::string& path, int threads = 0);

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_SYNTH_MODEL_H_
