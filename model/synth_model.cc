#include "model/synth_model.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/quantize.h"
#include "model/gguf_writer.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// ---------------------------------------------------------------------------------------
// The generator (specified in synth_model.h). Only float +, -, *, / and sqrt are used, which
// IEEE 754 rounds exactly, so the values are the same on every platform (the file is compiled
// with -ffp-contract=off so no fused multiply-add changes a rounding). The steps are written
// without branches, in 32-bit lanes, so that the compiler vectorises them (SSE2 and up).

// Debian's abseil has its own string_view type, which StrCat does not take std's for.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15;  // splitmix64's increment

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3;
  }
  return h;
}

uint64_t StreamKey(uint64_t seed, std::string_view stream) {
  return Mix64(Mix64(seed) ^ Fnv1a64(stream));
}

constexpr float kLn2 = 0.693147180559945309f;
constexpr float kSqrt2 = 1.41421356237309504880f;
constexpr float kHalfSqrt2 = 0.70710678118654752440f;
constexpr float kHalfPi = 1.57079632679489661923f;
constexpr uint32_t kOneBits = 0x3f800000;  // 1.0f

// All ones if x < 0 (its sign bit set), else 0.
uint32_t SignMask(float x) { return static_cast<uint32_t>(std::bit_cast<int32_t>(x) >> 31); }
float Select(uint32_t mask, float if_set, float if_clear) {
  return std::bit_cast<float>((std::bit_cast<uint32_t>(if_set) & mask) |
                              (std::bit_cast<uint32_t>(if_clear) & ~mask));
}

// ln(u) for u in (0, 1]: u = f * 2^e with f in [sqrt(1/2), sqrt(2)]; ln f = 2 atanh(s),
// s = (f - 1) / (f + 1), |s| <= 0.172, whose series to s^9 is within 1e-9.
float LogUnit(float u) {
  const uint32_t bits = std::bit_cast<uint32_t>(u);
  float f = std::bit_cast<float>((bits & 0x7fffff) | kOneBits);  // [1, 2)
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127);
  const uint32_t high = SignMask(kSqrt2 - f);  // f > sqrt(2): halve it, e + 1
  f = Select(high, f * 0.5f, f);
  e += std::bit_cast<float>(kOneBits & high);
  const float s = (f - 1.0f) / (f + 1.0f);
  const float s2 = s * s;
  return e * kLn2 +
         2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9)))));
}

// Box-Muller on one 64-bit draw (hi, lo halves): z0 = r cos(theta), z1 = r sin(theta).
void NormalPair(uint32_t hi, uint32_t lo, float& z0, float& z1) {
  // u1 = float(hi >> 1 | 1) / 2^31, in (0, 1].
  const float u1 = static_cast<float>(static_cast<int32_t>((hi >> 1) | 1)) * (1.0f / 2147483648.0f);
  const float r = std::sqrt(-2.0f * LogUnit(u1));
  // theta = quadrant * pi/2 + pi/4 + x: quadrant = lo >> 30, x = (lo bits 7..29 / 2^23 - 1/2)
  // * pi/2, in [-pi/4, pi/4); Taylor series to x^9 and x^10, within 2e-9.
  const uint32_t quadrant = lo >> 30;
  const float x =
      (static_cast<float>(static_cast<int32_t>((lo >> 7) & 0x7fffff)) * (1.0f / 8388608.0f) -
       0.5f) *
      kHalfPi;
  const float x2 = x * x;
  const float sin_x =
      x *
      (1.0f + x2 * (-1.0f / 6 + x2 * (1.0f / 120 + x2 * (-1.0f / 5040 + x2 * (1.0f / 362880)))));
  const float cos_x =
      1.0f +
      x2 * (-1.0f / 2 +
            x2 * (1.0f / 24 + x2 * (-1.0f / 720 + x2 * (1.0f / 40320 + x2 * (-1.0f / 3628800)))));
  const float c = r * ((cos_x - sin_x) * kHalfSqrt2);  // r cos(pi/4 + x)
  const float s = r * ((cos_x + sin_x) * kHalfSqrt2);  // r sin(pi/4 + x)
  // Adding quadrant * pi/2 maps (c, s) to (c, s), (-s, c), (-c, -s), (s, -c).
  const uint32_t swap = 0 - (quadrant & 1);  // all ones in quadrants 1 and 3
  const uint32_t sign0 = ((quadrant ^ (quadrant >> 1)) & 1) << 31;
  const uint32_t sign1 = (quadrant >> 1) << 31;
  z0 = std::bit_cast<float>(std::bit_cast<uint32_t>(Select(swap, s, c)) ^ sign0);
  z1 = std::bit_cast<float>(std::bit_cast<uint32_t>(Select(swap, c, s)) ^ sign1);
}

// Normal values z_{2p}, z_{2p+1} for pairs p = first_pair, ..., first_pair + kBatch - 1.
constexpr int kBatch = 64;
void NormalBatch(uint64_t key, uint64_t first_pair, float* z) {
  uint32_t hi[kBatch];
  uint32_t lo[kBatch];
  for (int k = 0; k < kBatch; ++k) {
    const uint64_t bits = Mix64(key + (first_pair + k + 1) * kGolden);
    hi[k] = static_cast<uint32_t>(bits >> 32);
    lo[k] = static_cast<uint32_t>(bits);
  }
  for (int k = 0; k < kBatch; ++k) NormalPair(hi[k], lo[k], z[2 * k], z[2 * k + 1]);
}

// Calls emit(i, z_i) for i in [first, first + n) of the stream `key`.
template <typename Emit>
void ForEachNormal(uint64_t key, int64_t first, int64_t n, Emit emit) {
  float z[2 * kBatch];
  const int64_t end = first + n;
  for (int64_t i = first; i < end;) {
    const int64_t batch_first = i / (2 * kBatch) * (2 * kBatch);  // batches are aligned
    NormalBatch(key, static_cast<uint64_t>(batch_first / 2), z);
    const int64_t batch_end = std::min(end, batch_first + 2 * kBatch);
    for (; i < batch_end; ++i) emit(i, z[i - batch_first]);
  }
}

constexpr float kNormGainStd = 0.02f;

// ---------------------------------------------------------------------------------------
// Vocabulary.

constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's space

// Common English words, most frequent first (short stories' vocabulary included, since the
// models are mostly prompted with "Once upon a time"). Byte-pair merges learnt from them give
// word-like pieces, so English text encodes into a few tokens per word as with a real model.
constexpr std::string_view kWords[] = {
    "the",         "and",       "a",         "to",          "was",     "he",     "she",
    "it",          "of",        "in",        "you",         "they",    "said",   "her",
    "his",         "with",      "that",      "on",          "for",     "is",     "I",
    "The",         "day",       "one",       "big",         "had",     "were",   "play",
    "little",      "not",       "but",       "so",          "at",      "time",   "happy",
    "Once",        "upon",      "there",     "friend",      "friends", "all",    "very",
    "saw",         "be",        "we",        "have",        "what",    "can",    "went",
    "mom",         "them",      "do",        "want",        "wanted",  "like",   "loved",
    "are",         "this",      "up",        "He",          "She",     "They",   "It",
    "One",         "Lily",      "Tom",       "Ben",         "Sue",     "from",   "an",
    "as",          "by",        "or",        "will",        "would",   "could",  "their",
    "out",         "about",     "if",        "which",       "when",    "who",    "make",
    "made",        "go",        "see",       "look",        "looked",  "know",   "get",
    "got",         "come",      "came",      "think",       "thought", "take",   "took",
    "good",        "new",       "first",     "last",        "long",    "great",  "old",
    "own",         "other",     "right",     "small",       "large",   "next",   "young",
    "important",   "few",       "public",    "bad",         "same",    "able",   "people",
    "year",        "way",       "thing",     "things",      "man",     "woman",  "child",
    "children",    "world",     "life",      "hand",        "part",    "place",  "case",
    "week",        "work",      "home",      "house",       "room",    "tree",   "park",
    "ball",        "dog",       "cat",       "bird",        "fish",    "sun",    "sky",
    "water",       "food",      "toy",       "toys",        "car",     "box",    "door",
    "garden",      "flower",    "flowers",   "girl",        "boy",     "named",  "lived",
    "found",       "started",   "asked",     "smiled",      "laughed", "played", "jumped",
    "ran",         "help",      "helped",    "say",         "tell",    "told",   "give",
    "gave",        "find",      "try",       "tried",       "feel",    "felt",   "sad",
    "scared",      "kind",      "nice",      "fun",         "funny",   "pretty", "red",
    "blue",        "green",     "yellow",    "bright",      "dark",    "warm",   "cold",
    "fast",        "slow",      "high",      "down",        "into",    "over",   "under",
    "again",       "then",      "after",     "before",      "because", "every",  "some",
    "many",        "more",      "most",      "much",        "no",      "yes",    "too",
    "also",        "just",      "now",       "how",         "why",     "where",  "here",
    "only",        "even",      "back",      "well",        "never",   "always", "together",
    "something",   "nothing",   "everyone",  "anything",    "mother",  "father", "brother",
    "sister",      "family",    "teacher",   "school",      "story",   "idea",   "learn",
    "learned",     "share",     "shared",    "love",        "heart",   "hug",    "eat",
    "ate",         "sleep",     "walk",      "walked",      "run",     "open",   "opened",
    "close",       "closed",    "turn",      "turned",      "ending",  "nation", "question",
    "information", "beautiful", "different", "interesting",
};

// Learns byte-pair merges over kWords (each word with a leading space, weighted by rank)
// and appends each new merged piece to `pieces` until `limit` pieces or no pair is left.
void AppendLearntPieces(size_t limit, std::vector<std::string>& pieces,
                        std::unordered_set<std::string>& known) {
  std::vector<std::vector<std::string>> words;
  std::vector<int64_t> weights;
  const int64_t n_words = std::size(kWords);
  for (int64_t rank = 0; rank < n_words; ++rank) {
    std::vector<std::string> symbols = {std::string(kSpace)};
    for (char c : kWords[rank]) symbols.emplace_back(1, c);
    words.push_back(std::move(symbols));
    weights.push_back(1'000'000 / (rank + 10));  // Zipf-like frequencies
  }
  while (pieces.size() < limit) {
    // std::map: iteration order, hence tie-breaking, is independent of the library.
    std::map<std::pair<std::string, std::string>, int64_t> counts;
    for (size_t w = 0; w < words.size(); ++w) {
      for (size_t i = 0; i + 1 < words[w].size(); ++i) {
        counts[{words[w][i], words[w][i + 1]}] += weights[w];
      }
    }
    if (counts.empty()) return;
    auto best = counts.begin();
    for (auto it = counts.begin(); it != counts.end(); ++it) {
      if (it->second > best->second) best = it;  // first (smallest) pair wins ties
    }
    const auto [left, right] = best->first;
    const std::string merged = left + right;
    if (known.insert(merged).second) pieces.push_back(merged);
    for (std::vector<std::string>& symbols : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(std::move(symbols[i]));
        }
      }
      symbols = std::move(out);
    }
  }
}

// Appends "▁s" and "s" for lowercase strings s of length 2, 3, ... in lexicographic order
// until `limit` pieces. Every string of length L - 1 is present before any of length L, so
// "▁abc" = "▁ab" + "c" and "abc" = "ab" + "c" are reachable.
void AppendLetterStrings(size_t limit, std::vector<std::string>& pieces,
                         std::unordered_set<std::string>& known) {
  auto add = [&](std::string piece) {
    if (pieces.size() < limit && known.insert(piece).second) pieces.push_back(std::move(piece));
  };
  for (int length = 2; pieces.size() < limit; ++length) {
    std::string s(length, 'a');
    while (pieces.size() < limit) {
      add(absl::StrCat(Sv(kSpace), s));
      add(s);
      int i = length - 1;  // odometer increment
      while (i >= 0 && s[i] == 'z') s[i--] = 'a';
      if (i < 0) break;
      ++s[i];
    }
  }
}

// ---------------------------------------------------------------------------------------
// Tensors.

// llama.cpp's llama_ftype for a model whose weights are mostly `type`.
uint32_t FileType(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 0;
    case TensorType::kF16:
      return 1;
    case TensorType::kQ4_0:
      return 2;
    case TensorType::kQ8_0:
      return 7;
    case TensorType::kBF16:
      return 32;
    case TensorType::kQ8Group:
      break;
  }
  return 0;
}

// Streams `tensor`'s bytes: rows are generated and converted by `threads` threads into a
// buffer of about kChunkBytes, which is then written; each row depends only on its index.
constexpr size_t kChunkBytes = size_t{8} << 20;

absl::Status StreamTensor(const SynthSpec& spec, const SynthTensor& tensor, int threads,
                          GgufTensorSink& sink) {
  const int64_t cols = tensor.cols();
  const int64_t rows = tensor.rows();
  const size_t row_bytes = TensorBytes(tensor.type, cols);
  const int64_t chunk_rows =
      std::clamp<int64_t>(static_cast<int64_t>(kChunkBytes / row_bytes), 1, rows);
  std::vector<uint8_t> buffer(chunk_rows * row_bytes);
  auto convert = [&](int64_t first_row, int64_t end_row, int64_t chunk_first) {
    std::vector<float> values(cols);
    for (int64_t r = first_row; r < end_row; ++r) {
      SynthTensorValues(spec, tensor, r * cols, values);
      QuantizeRow(tensor.type, values, buffer.data() + (r - chunk_first) * row_bytes);
    }
  };
  for (int64_t first = 0; first < rows; first += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - first);
    const int64_t workers = std::clamp<int64_t>(threads, 1, n);
    std::vector<std::jthread> pool;
    for (int64_t w = 1; w < workers; ++w) {
      pool.emplace_back(convert, first + n * w / workers, first + n * (w + 1) / workers, first);
    }
    convert(first, first + n / workers, first);
    pool.clear();  // joins
    if (absl::Status status = sink.Write(buffer.data(), n * row_bytes); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

void SetModelMetadata(const SynthSpec& spec, const Vocabulary& vocab, GgufWriter& writer) {
  writer.SetString("general.architecture", "llama");
  writer.SetString("general.name", spec.name);
  writer.SetUint32("general.file_type", FileType(spec.weight_type));
  writer.SetUint32("llama.context_length", spec.context_length);
  writer.SetUint32("llama.embedding_length", spec.dim);
  writer.SetUint32("llama.block_count", spec.n_layers);
  writer.SetUint32("llama.feed_forward_length", spec.hidden_dim);
  writer.SetUint32("llama.attention.head_count", spec.n_heads);
  writer.SetUint32("llama.attention.head_count_kv", spec.n_kv_heads);
  writer.SetUint32("llama.rope.dimension_count", spec.dim / spec.n_heads);
  writer.SetFloat32("llama.attention.layer_norm_rms_epsilon", spec.rms_eps);
  writer.SetFloat32("llama.rope.freq_base", spec.rope_freq_base);
  writer.SetUint32("llama.vocab_size", spec.vocab_size);
  if (spec.n_experts > 0) {
    writer.SetUint32("llama.expert_count", spec.n_experts);
    writer.SetUint32("llama.expert_used_count", spec.n_experts_used);
  }
  writer.SetString("tokenizer.ggml.model", "llama");
  writer.SetArray("tokenizer.ggml.tokens", std::span<const std::string>(vocab.pieces));
  writer.SetArray("tokenizer.ggml.scores", std::span<const float>(vocab.scores));
  std::vector<int32_t> kinds(vocab.kinds.size());
  for (size_t i = 0; i < kinds.size(); ++i) kinds[i] = static_cast<int32_t>(vocab.kinds[i]);
  writer.SetArray("tokenizer.ggml.token_type", std::span<const int32_t>(kinds));
  writer.SetUint32("tokenizer.ggml.bos_token_id", vocab.bos_id);
  writer.SetUint32("tokenizer.ggml.eos_token_id", vocab.eos_id);
  writer.SetUint32("tokenizer.ggml.unknown_token_id", vocab.unk_id);
  writer.SetBool("tokenizer.ggml.add_bos_token", vocab.add_bos);
  writer.SetBool("tokenizer.ggml.add_eos_token", false);
  writer.SetBool("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix);
  writer.SetUint32("synth.version", kSynthVersion);
  writer.SetUint64("synth.seed", spec.seed);
  writer.SetFloat32("synth.std", spec.std);
}

// "blk.12.attn_q.weight" -> 12; -1 for tensors outside the layers.
int LayerOf(const std::string& name) {
  if (!name.starts_with("blk.")) return -1;
  return std::atoi(name.c_str() + 4);
}

}  // namespace

int64_t SynthTensor::rows() const {
  int64_t r = 1;
  for (size_t i = 1; i < shape.size(); ++i) r *= shape[i];
  return r;
}

SynthSpec DefaultModelSpec() { return SynthSpec(); }

std::vector<std::string_view> SynthPresetNames() {
  return {"tiny", "mini", "tinyllama", "moe-mini"};
}

absl::StatusOr<SynthSpec> SynthPreset(std::string_view name) {
  SynthSpec spec;
  spec.name = absl::StrCat("synthetic-", Sv(name));
  if (name == "tiny") return spec;
  if (name == "mini") {  // the shape of ../shared/models/mini-*.gguf
    spec.dim = 256;
    spec.hidden_dim = 768;
    spec.n_layers = 4;
    spec.n_heads = 8;
    spec.n_kv_heads = 2;
    spec.vocab_size = 2048;
    spec.context_length = 512;
    spec.weight_type = TensorType::kF32;
    return spec;
  }
  if (name == "tinyllama") {  // TinyLlama-1.1B's shape; Q4_0 makes it ~590 MiB
    spec.dim = 2048;
    spec.hidden_dim = 5632;
    spec.n_layers = 22;
    spec.n_heads = 32;
    spec.n_kv_heads = 4;
    spec.vocab_size = 32000;
    spec.context_length = 2048;
    spec.weight_type = TensorType::kQ4_0;
    return spec;
  }
  if (name == "moe-mini") {  // the shape of ../shared/models/moe-mini-*.gguf
    spec.dim = 128;
    spec.hidden_dim = 256;
    spec.n_layers = 4;
    spec.n_heads = 8;
    spec.n_kv_heads = 4;
    spec.vocab_size = 1024;
    spec.context_length = 512;
    spec.n_experts = 8;
    spec.n_experts_used = 2;
    spec.weight_type = TensorType::kF32;
    return spec;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown synth preset \"", Sv(name), "\" (presets: ",
                   absl::StrJoin(SynthPresetNames(), ", ",
                                 [](std::string* out, std::string_view n) { out->append(n); }),
                   ")"));
}

absl::Status ValidateSynthSpec(const SynthSpec& spec) {
  auto bad = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  // Bounds keep every tensor and the file far from integer overflow.
  constexpr int kMaxSize = 1 << 20;
  const std::pair<std::string_view, int> sizes[] = {
      {"dim", spec.dim},
      {"hidden_dim", spec.hidden_dim},
      {"n_layers", spec.n_layers},
      {"n_heads", spec.n_heads},
      {"n_kv_heads", spec.n_kv_heads},
      {"context_length", spec.context_length},
  };
  for (const auto& [what, value] : sizes) {
    if (value <= 0 || value > kMaxSize) {
      return bad("synth: ", Sv(what), " must be in [1, ", kMaxSize, "], got ", value);
    }
  }
  if (spec.vocab_size < kMinSynthVocab || spec.vocab_size > kMaxSynthVocab) {
    return bad("synth: vocab_size ", spec.vocab_size, " must be in [", kMinSynthVocab, ", ",
               kMaxSynthVocab, "]: the vocabulary holds <unk>, <s>, </s> and 256 byte tokens");
  }
  if (spec.dim % spec.n_heads != 0) {
    return bad("synth: dim ", spec.dim, " is not a multiple of n_heads ", spec.n_heads);
  }
  if (spec.n_heads % spec.n_kv_heads != 0) {
    return bad("synth: n_heads ", spec.n_heads, " is not a multiple of n_kv_heads ",
               spec.n_kv_heads);
  }
  if ((spec.dim / spec.n_heads) % 2 != 0) {
    return bad("synth: head size ", spec.dim / spec.n_heads,
               " (dim / n_heads) must be even: RoPE rotates pairs");
  }
  switch (spec.weight_type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
      break;
    case TensorType::kQ8Group:
      return bad("synth: weight type ", Sv(TensorTypeName(spec.weight_type)),
                 " has no GGUF encoding (use f32, f16, bf16, q8_0 or q4_0)");
  }
  if (spec.n_experts < 0 || spec.n_experts > 256) {
    return bad("synth: n_experts must be in [0, 256], got ", spec.n_experts);
  }
  if (spec.n_experts == 0 && spec.n_experts_used != 0) {
    return bad("synth: n_experts_used ", spec.n_experts_used, " needs n_experts > 0");
  }
  if (spec.n_experts > 0 && (spec.n_experts_used < 1 || spec.n_experts_used > spec.n_experts)) {
    return bad("synth: n_experts_used must be in [1, n_experts = ", spec.n_experts, "], got ",
               spec.n_experts_used);
  }
  if (!(spec.rope_freq_base > 0.0f) || !std::isfinite(spec.rope_freq_base)) {
    return bad("synth: rope_freq_base must be positive, got ", spec.rope_freq_base);
  }
  if (!(spec.rms_eps > 0.0f) || !std::isfinite(spec.rms_eps)) {
    return bad("synth: rms_eps must be positive, got ", spec.rms_eps);
  }
  if (!(spec.std > 0.0f) || !std::isfinite(spec.std)) {
    return bad("synth: std must be positive, got ", spec.std);
  }
  // One tensor (the embedding, or a stacked expert tensor) must stay addressable.
  const int64_t largest =
      std::max<int64_t>(int64_t{spec.dim} * spec.vocab_size,
                        int64_t{spec.dim} * spec.hidden_dim * std::max(1, spec.n_experts));
  if (largest > (int64_t{1} << 36)) {
    return bad("synth: a tensor of ", largest, " values is too large (at most 2^36)");
  }
  return absl::OkStatus();
}

absl::StatusOr<Vocabulary> SynthVocabulary(int vocab_size) {
  if (vocab_size < kMinSynthVocab || vocab_size > kMaxSynthVocab) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synth: vocab_size ", vocab_size, " must be in [", kMinSynthVocab, ", ", kMaxSynthVocab,
        "]: the vocabulary holds <unk>, <s>, </s> and 256 byte tokens"));
  }
  Vocabulary vocab;
  vocab.style = VocabularyStyle::kSentencePiece;
  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.unk_id = 0;
  vocab.add_bos = true;
  vocab.add_space_prefix = true;
  std::vector<std::string>& pieces = vocab.pieces;
  pieces = {"<unk>", "<s>", "</s>"};
  vocab.kinds = {TokenKind::kUnknown, TokenKind::kControl, TokenKind::kControl};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    pieces.emplace_back(name);
    vocab.kinds.push_back(TokenKind::kByte);
  }
  const size_t limit = vocab_size;
  std::unordered_set<std::string> known;
  auto add = [&](std::string piece) {
    if (pieces.size() < limit && known.insert(piece).second) pieces.push_back(std::move(piece));
  };
  add(std::string(kSpace));
  for (char c = 0x21; c < 0x7f; ++c) add(std::string(1, c));
  for (char c = 'a'; c <= 'z'; ++c) add(absl::StrCat(Sv(kSpace), std::string(1, c)));
  for (char c = 'A'; c <= 'Z'; ++c) add(absl::StrCat(Sv(kSpace), std::string(1, c)));
  AppendLearntPieces(limit, pieces, known);
  AppendLetterStrings(limit, pieces, known);

  vocab.kinds.resize(pieces.size(), TokenKind::kNormal);
  vocab.scores.resize(pieces.size(), 0.0f);
  for (size_t i = kMinSynthVocab; i < pieces.size(); ++i) {
    vocab.scores[i] = -static_cast<float>(i + 1);  // earlier pieces merge first
  }
  for (const std::string& p : pieces) {
    vocab.max_piece_length = std::max(vocab.max_piece_length, static_cast<int>(p.size()));
  }
  return vocab;
}

std::vector<SynthTensor> SynthTensorPlan(const SynthSpec& spec) {
  const int64_t dim = spec.dim;
  const int64_t hidden = spec.hidden_dim;
  const int64_t kv_dim = dim / spec.n_heads * spec.n_kv_heads;
  const int64_t experts = spec.n_experts;
  std::vector<SynthTensor> plan;
  auto weight = [&](std::string name, std::vector<int64_t> shape) {
    // Rows that are not whole blocks cannot be quantized: keep such a tensor in f32.
    const TensorType type =
        shape[0] % BlockElements(spec.weight_type) == 0 ? spec.weight_type : TensorType::kF32;
    plan.push_back({std::move(name), type, std::move(shape), SynthInit::kWeight});
  };
  auto norm = [&](std::string name) {
    plan.push_back({std::move(name), TensorType::kF32, {dim}, SynthInit::kNormGain});
  };
  weight("token_embd.weight", {dim, spec.vocab_size});
  norm("output_norm.weight");
  if (!spec.tied_output) weight("output.weight", {dim, spec.vocab_size});
  for (int l = 0; l < spec.n_layers; ++l) {
    auto name = [l](std::string_view suffix) { return absl::StrCat("blk.", l, ".", Sv(suffix)); };
    norm(name("attn_norm.weight"));
    weight(name("attn_q.weight"), {dim, dim});
    weight(name("attn_k.weight"), {dim, kv_dim});
    weight(name("attn_v.weight"), {dim, kv_dim});
    weight(name("attn_output.weight"), {dim, dim});
    norm(name("ffn_norm.weight"));
    if (experts > 0) {
      // The router stays f32, as llama.cpp's quantizer leaves it.
      plan.push_back(SynthTensor{
          name("ffn_gate_inp.weight"), TensorType::kF32, {dim, experts}, SynthInit::kWeight});
      weight(name("ffn_gate_exps.weight"), {dim, hidden, experts});
      weight(name("ffn_up_exps.weight"), {dim, hidden, experts});
      weight(name("ffn_down_exps.weight"), {hidden, dim, experts});
    } else {
      weight(name("ffn_gate.weight"), {dim, hidden});
      weight(name("ffn_up.weight"), {dim, hidden});
      weight(name("ffn_down.weight"), {hidden, dim});
    }
  }
  return plan;
}

void SynthNormals(uint64_t seed, std::string_view stream, int64_t first, std::span<float> out) {
  ForEachNormal(StreamKey(seed, stream), first, static_cast<int64_t>(out.size()),
                [&](int64_t i, float z) { out[i - first] = z; });
}

void SynthTensorValues(const SynthSpec& spec, const SynthTensor& tensor, int64_t first,
                       std::span<float> out) {
  const bool gain = tensor.init == SynthInit::kNormGain;
  const float mean = gain ? 1.0f : 0.0f;
  const float sd = gain ? kNormGainStd : spec.std;
  ForEachNormal(StreamKey(spec.seed, tensor.name), first, static_cast<int64_t>(out.size()),
                [&](int64_t i, float z) { out[i - first] = mean + sd * z; });
}

absl::Status WriteSynthModel(const SynthSpec& spec, const std::string& path, int threads) {
  if (absl::Status status = ValidateSynthSpec(spec); !status.ok()) return status;
  absl::StatusOr<Vocabulary> vocab = SynthVocabulary(spec.vocab_size);
  if (!vocab.ok()) return vocab.status();
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  GgufWriter writer;
  SetModelMetadata(spec, *vocab, writer);
  const std::vector<SynthTensor> plan = SynthTensorPlan(spec);
  std::vector<std::string> unquantized;
  for (const SynthTensor& t : plan) {
    if (t.init == SynthInit::kWeight && t.type != spec.weight_type &&
        !t.name.ends_with("ffn_gate_inp.weight")) {
      unquantized.push_back(t.name);
    }
  }
  if (!unquantized.empty()) {
    spdlog::warn(
        "synth: {} tensor(s) have rows that are not a multiple of {} values and are "
        "stored as f32 instead of {}: {}",
        unquantized.size(), BlockElements(spec.weight_type), TensorTypeName(spec.weight_type),
        absl::StrJoin(unquantized, ", "));
  }

  const uint64_t file_bytes_estimate = [&] {
    uint64_t total = 0;
    for (const SynthTensor& t : plan) total += TensorBytes(t.type, t.cols() * t.rows());
    return total;
  }();
  // Per-layer progress matters only when writing takes a noticeable time.
  const auto progress_level =
      file_bytes_estimate >= (uint64_t{256} << 20) ? spdlog::level::info : spdlog::level::debug;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  uint64_t written = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const SynthTensor& t = plan[i];
    const bool layer_done = LayerOf(t.name) >= 0 &&
                            (i + 1 == plan.size() || LayerOf(plan[i + 1].name) != LayerOf(t.name));
    absl::Status status = writer.AddTensor(
        t.name, t.type, t.shape, [&, i, layer_done](GgufTensorSink& sink) -> absl::Status {
          const SynthTensor& tensor = plan[i];
          if (absl::Status s = StreamTensor(spec, tensor, threads, sink); !s.ok()) return s;
          written += TensorBytes(tensor.type, tensor.cols() * tensor.rows());
          if (layer_done) {
            spdlog::log(progress_level, "synth: layer {}/{} written ({} / {} MiB, {:.1f} s)",
                        LayerOf(tensor.name) + 1, spec.n_layers, written >> 20,
                        file_bytes_estimate >> 20, elapsed());
          }
          return absl::OkStatus();
        });
    if (!status.ok()) return status;
  }
  const std::string summary =
      fmt::format("{} layers, dim {}, {}{}, {:.1f} MiB, seed {}", spec.n_layers, spec.dim,
                  TensorTypeName(spec.weight_type),
                  spec.n_experts > 0 ? fmt::format(", {} experts", spec.n_experts) : "",
                  writer.FileSize() / 1048576.0, spec.seed);
  spdlog::log(progress_level, "synth: writing {} ({})", path, summary);
  if (absl::Status status = writer.Write(path); !status.ok()) return status;
  spdlog::info("synth: wrote {} ({}) in {:.1f} s", path, summary, elapsed());
  return absl::OkStatus();
}

}  // namespace shardrun
