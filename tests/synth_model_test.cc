// Synthetic models: the generator, the vocabulary, spec validation, presets, the written
// files (read back with ModelFile::Open, tensor bytes checked against QuantizeRow) and
// `shardrun synth`.
#include "model/synth_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "kernels/quantize.h"
#include "model/model_file.h"
#include "tests/test_util.h"

namespace shardrun {
namespace {

const std::string& TempDir() {
  static const std::string dir = testing::MakeTempDir();
  return dir;
}

class RemoveTempDir : public ::testing::Environment {
 public:
  void TearDown() override { std::filesystem::remove_all(TempDir()); }
};
[[maybe_unused]] const auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new RemoveTempDir);

std::string TempPath(const std::string& name) { return TempDir() + "/" + name; }

std::unique_ptr<ModelFile> OpenOrDie(const std::string& path) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open(path);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

std::map<std::string, std::string> Metadata(const ModelFile& model) {
  return {model.metadata().begin(), model.metadata().end()};
}

// A small spec that is quick to write but exercises GQA and several layers.
SynthSpec SmallSpec(TensorType type) {
  SynthSpec spec;
  spec.name = "small";
  spec.dim = 64;
  spec.hidden_dim = 160;
  spec.n_layers = 2;
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.vocab_size = 320;
  spec.context_length = 64;
  spec.weight_type = type;
  spec.seed = 5;
  return spec;
}

SynthSpec SmallMoeSpec(TensorType type) {
  SynthSpec spec = SmallSpec(type);
  spec.n_experts = 4;
  spec.n_experts_used = 2;
  spec.hidden_dim = 64;
  return spec;
}

// ---- The generator -----------------------------------------------------------------------

TEST(SynthGeneratorTest, GoldenValues) {
  // Pinned: the files must be identical on every platform and across versions. These values
  // came from this implementation (x86-64 SSE2, AVX2 and scalar builds, GCC and Clang agree).
  std::vector<float> z(8);
  SynthNormals(1, "golden", 0, z);
  EXPECT_EQ(z, (std::vector<float>{2.0255127f, -1.76734018f, 1.56191909f, -0.629815936f,
                                   -0.367935181f, -0.944151163f, 0.130977914f, -0.180104032f}));
  SynthNormals(42, "blk.0.attn_q.weight", 1000001, z);
  EXPECT_EQ(z, (std::vector<float>{-0.130630255f, 1.07084024f, -0.893116534f, 1.24474514f,
                                   -0.349984646f, -2.93335819f, -0.767540932f, -0.883247614f}));
}

TEST(SynthGeneratorTest, IsStandardNormal) {
  std::vector<float> z(1 << 21);
  SynthNormals(3, "stats", 0, z);
  double sum = 0, sum2 = 0, sum4 = 0, max_abs = 0;
  int64_t beyond[4] = {0, 0, 0, 0};
  for (float v : z) {
    sum += v;
    sum2 += double{v} * v;
    sum4 += double{v} * v * v * v;
    max_abs = std::max(max_abs, std::fabs(double{v}));
    for (int k = 1; k <= 4; ++k) beyond[k - 1] += std::fabs(v) > k;
  }
  const double n = static_cast<double>(z.size());
  const double mean = sum / n;
  const double var = sum2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.003);
  EXPECT_NEAR(var, 1.0, 0.005);
  EXPECT_NEAR(sum4 / n / (var * var), 3.0, 0.05);  // kurtosis of a normal
  // Tail masses P(|z| > k) of the standard normal.
  const double tails[4] = {0.317311, 0.0455003, 0.0026998, 0.0000633};
  for (int k = 0; k < 3; ++k) {
    EXPECT_NEAR(beyond[k] / n, tails[k], tails[k] * 0.03 + 2e-4) << "beyond " << k + 1;
  }
  EXPECT_GT(beyond[3], 0);
  EXPECT_LT(max_abs, 6.6);  // u1 >= 2^-31 bounds |z| by sqrt(62 ln 2)
}

TEST(SynthGeneratorTest, AnyRangeMatchesTheWholeStream) {
  std::vector<float> whole(1000);
  SynthNormals(9, "s", 0, whole);
  for (int64_t first : {0, 1, 127, 128, 129, 255, 256, 601}) {
    for (int64_t n : {1, 2, 3, 130, 399}) {
      std::vector<float> part(n);
      SynthNormals(9, "s", first, part);
      EXPECT_TRUE(std::equal(part.begin(), part.end(), whole.begin() + first)) << first << " " << n;
    }
  }
}

TEST(SynthGeneratorTest, SeedsAndStreamsAreIndependent) {
  std::vector<float> a(64), b(64), c(64);
  SynthNormals(1, "x", 0, a);
  SynthNormals(2, "x", 0, b);
  SynthNormals(1, "y", 0, c);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(b, c);
}

TEST(SynthGeneratorTest, NormGainsAreNearOne) {
  const SynthSpec spec = SmallSpec(TensorType::kF32);
  const SynthTensor norm = {"output_norm.weight", TensorType::kF32, {4096}, SynthInit::kNormGain};
  std::vector<float> v(4096);
  SynthTensorValues(spec, norm, 0, v);
  double sum = 0, sum2 = 0;
  for (float x : v) {
    sum += x;
    sum2 += double{x} * x;
  }
  const double mean = sum / v.size();
  EXPECT_NEAR(mean, 1.0, 0.002);
  EXPECT_NEAR(std::sqrt(sum2 / v.size() - mean * mean), 0.02, 0.002);
}

// ---- The vocabulary ----------------------------------------------------------------------

const std::string kSpace = "\xe2\x96\x81";

// SentencePiece BPE as llama.cpp applies it: start from characters, repeatedly merge the
// adjacent pair whose concatenation is the highest-scoring piece.
std::vector<std::string> SpmMerge(const Vocabulary& vocab, const std::string& text) {
  std::map<std::string, float> score;
  for (int i = 0; i < vocab.size(); ++i) score[vocab.pieces[i]] = vocab.scores[i];
  std::vector<std::string> symbols;
  for (size_t i = 0; i < text.size();) {
    const size_t len = (text[i] & 0x80) == 0 ? 1 : (text[i] & 0xE0) == 0xC0 ? 2 : 3;
    symbols.push_back(text.substr(i, len));
    i += len;
  }
  while (true) {
    int best = -1;
    float best_score = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = score.find(symbols[i] + symbols[i + 1]);
      if (it != score.end() && (best < 0 || it->second > best_score)) {
        best = static_cast<int>(i);
        best_score = it->second;
      }
    }
    if (best < 0) return symbols;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + best + 1);
  }
}

TEST(SynthVocabularyTest, LayoutAndKinds) {
  absl::StatusOr<Vocabulary> vocab = SynthVocabulary(2048);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  ASSERT_EQ(vocab->size(), 2048);
  ASSERT_EQ(vocab->scores.size(), 2048u);
  ASSERT_EQ(vocab->kinds.size(), 2048u);
  EXPECT_EQ(vocab->style, VocabularyStyle::kSentencePiece);
  EXPECT_EQ(vocab->pieces[0], "<unk>");
  EXPECT_EQ(vocab->pieces[1], "<s>");
  EXPECT_EQ(vocab->pieces[2], "</s>");
  EXPECT_EQ(vocab->kinds[0], TokenKind::kUnknown);
  EXPECT_EQ(vocab->kinds[1], TokenKind::kControl);
  EXPECT_EQ(vocab->kinds[2], TokenKind::kControl);
  EXPECT_EQ(vocab->bos_id, 1);
  EXPECT_EQ(vocab->eos_id, 2);
  EXPECT_EQ(vocab->unk_id, 0);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    EXPECT_EQ(vocab->pieces[3 + b], name);
    EXPECT_EQ(vocab->kinds[3 + b], TokenKind::kByte);
  }
  EXPECT_EQ(vocab->pieces[259], kSpace);
  std::set<std::string> unique(vocab->pieces.begin(), vocab->pieces.end());
  EXPECT_EQ(unique.size(), vocab->pieces.size());
  for (int i = 259; i < vocab->size(); ++i) {
    EXPECT_EQ(vocab->kinds[i], TokenKind::kNormal) << i;
    if (i > 259) {
      EXPECT_LT(vocab->scores[i], vocab->scores[i - 1]) << i;
    }
  }
  // Every printable ASCII character and "▁" + letter is a piece.
  for (char c = 0x21; c < 0x7f; ++c) EXPECT_TRUE(unique.contains(std::string(1, c))) << c;
  for (char c = 'a'; c <= 'z'; ++c) EXPECT_TRUE(unique.contains(kSpace + c)) << c;
  for (char c = 'A'; c <= 'Z'; ++c) EXPECT_TRUE(unique.contains(kSpace + c)) << c;
  for (const char* word : {"the", "and", "Once", "upon", "time", "little", "friend"}) {
    EXPECT_TRUE(unique.contains(kSpace + word)) << word;
  }
}

TEST(SynthVocabularyTest, EveryLongPieceIsAMergeOfTwoPieces) {
  for (int size : {259, 400, 2048, 32000}) {
    SCOPED_TRACE(size);
    absl::StatusOr<Vocabulary> vocab = SynthVocabulary(size);
    ASSERT_TRUE(vocab.ok());
    ASSERT_EQ(vocab->size(), size);
    std::unordered_set<std::string> known;
    for (int i = 259; i < size; ++i) {
      const std::string& p = vocab->pieces[i];
      bool single = p.size() == 1 || p == kSpace;
      bool reachable = single;
      for (size_t cut = 1; !reachable && cut < p.size(); ++cut) {
        if ((p[cut] & 0xC0) == 0x80) continue;  // not a UTF-8 character boundary
        // Both halves must already be pieces: earlier, with higher scores.
        reachable = known.contains(p.substr(0, cut)) && known.contains(p.substr(cut));
      }
      EXPECT_TRUE(reachable) << "piece " << i << " '" << p << "'";
      known.insert(p);
    }
  }
}

TEST(SynthVocabularyTest, SmallerVocabulariesArePrefixesOfLargerOnes) {
  absl::StatusOr<Vocabulary> small = SynthVocabulary(700);
  absl::StatusOr<Vocabulary> large = SynthVocabulary(5000);
  ASSERT_TRUE(small.ok() && large.ok());
  EXPECT_TRUE(std::equal(small->pieces.begin(), small->pieces.end(), large->pieces.begin()));
}

TEST(SynthVocabularyTest, EnglishTokenizesIntoWords) {
  absl::StatusOr<Vocabulary> vocab = SynthVocabulary(2048);
  ASSERT_TRUE(vocab.ok());
  EXPECT_EQ(
      SpmMerge(*vocab, kSpace + "Once" + kSpace + "upon" + kSpace + "a" + kSpace + "time"),
      (std::vector<std::string>{kSpace + "Once", kSpace + "upon", kSpace + "a", kSpace + "time"}));
  EXPECT_EQ(SpmMerge(*vocab, kSpace + "the" + kSpace + "little" + kSpace + "dog."),
            (std::vector<std::string>{kSpace + "the", kSpace + "little", kSpace + "dog", "."}));
}

TEST(SynthVocabularyTest, RejectsSizesWithoutRoomForSpecialsAndBytes) {
  for (int size : {0, 100, 258, kMaxSynthVocab + 1}) {
    absl::StatusOr<Vocabulary> vocab = SynthVocabulary(size);
    ASSERT_FALSE(vocab.ok()) << size;
    EXPECT_NE(vocab.status().message().find("byte tokens"), absl::string_view::npos)
        << vocab.status();
  }
}

// ---- Specs, presets and the tensor plan --------------------------------------------------

TEST(SynthSpecTest, PresetsAreValidAndHaveTheirShapes) {
  for (std::string_view name : SynthPresetNames()) {
    absl::StatusOr<SynthSpec> spec = SynthPreset(name);
    ASSERT_TRUE(spec.ok()) << name;
    EXPECT_TRUE(ValidateSynthSpec(*spec).ok()) << name;
    EXPECT_EQ(spec->name, "synthetic-" + std::string(name));
  }
  const SynthSpec tinyllama = *SynthPreset("tinyllama");
  EXPECT_EQ(tinyllama.dim, 2048);
  EXPECT_EQ(tinyllama.hidden_dim, 5632);
  EXPECT_EQ(tinyllama.n_layers, 22);
  EXPECT_EQ(tinyllama.n_heads, 32);
  EXPECT_EQ(tinyllama.n_kv_heads, 4);
  EXPECT_EQ(tinyllama.vocab_size, 32000);
  EXPECT_EQ(tinyllama.context_length, 2048);
  const SynthSpec mini = *SynthPreset("mini");
  EXPECT_EQ(mini.dim, 256);
  EXPECT_EQ(mini.n_kv_heads, 2);
  const SynthSpec moe = *SynthPreset("moe-mini");
  EXPECT_EQ(moe.n_experts, 8);
  EXPECT_EQ(moe.n_experts_used, 2);
  EXPECT_EQ(moe.hidden_dim, 256);
  const SynthSpec tiny = DefaultModelSpec();
  EXPECT_EQ(tiny.name, SynthPreset("tiny")->name);
  EXPECT_EQ(tiny.dim, 288);
  EXPECT_EQ(tiny.n_layers, 6);
  EXPECT_LT(tiny.n_kv_heads, tiny.n_heads);  // grouped-query attention
  EXPECT_EQ(tiny.weight_type, TensorType::kQ8_0);
  EXPECT_FALSE(SynthPreset("huge").ok());
}

TEST(SynthSpecTest, BadSpecsAreRejectedWithClearMessages) {
  struct Case {
    const char* what;
    void (*change)(SynthSpec&);
    const char* message;
  };
  const Case cases[] = {
      {"dim", [](SynthSpec& s) { s.dim = 0; }, "dim must be"},
      {"hidden", [](SynthSpec& s) { s.hidden_dim = -1; }, "hidden_dim must be"},
      {"layers", [](SynthSpec& s) { s.n_layers = 0; }, "n_layers must be"},
      {"heads", [](SynthSpec& s) { s.n_heads = 0; }, "n_heads must be"},
      {"kv", [](SynthSpec& s) { s.n_kv_heads = 0; }, "n_kv_heads must be"},
      {"ctx", [](SynthSpec& s) { s.context_length = 0; }, "context_length must be"},
      {"vocab", [](SynthSpec& s) { s.vocab_size = 258; }, "vocab_size 258"},
      {"dim % heads", [](SynthSpec& s) { s.n_heads = 5; }, "not a multiple of n_heads"},
      {"heads % kv", [](SynthSpec& s) { s.n_kv_heads = 4; }, "not a multiple of n_kv_heads"},
      {"odd head",
       [](SynthSpec& s) {
         s.dim = 90;
         s.n_heads = 6;
         s.n_kv_heads = 2;
       },
       "must be even"},
      {"type", [](SynthSpec& s) { s.weight_type = TensorType::kQ8Group; }, "q8_group"},
      {"used w/o experts", [](SynthSpec& s) { s.n_experts_used = 2; }, "needs n_experts"},
      {"used > experts",
       [](SynthSpec& s) {
         s.n_experts = 4;
         s.n_experts_used = 5;
       },
       "n_experts_used must be"},
      {"used 0",
       [](SynthSpec& s) {
         s.n_experts = 4;
         s.n_experts_used = 0;
       },
       "n_experts_used must be"},
      {"rope", [](SynthSpec& s) { s.rope_freq_base = 0; }, "rope_freq_base"},
      {"eps", [](SynthSpec& s) { s.rms_eps = -1; }, "rms_eps"},
      {"std", [](SynthSpec& s) { s.std = NAN; }, "std must be positive"},
      {"too large",
       [](SynthSpec& s) {
         s.dim = 1 << 20;
         s.vocab_size = 1 << 20;
         s.n_heads = 1 << 10;
         s.n_kv_heads = 1 << 10;
       },
       "too large"},
  };
  for (const Case& c : cases) {
    SynthSpec spec;
    c.change(spec);
    const absl::Status status = ValidateSynthSpec(spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(status.message().find(c.message), absl::string_view::npos)
        << c.what << ": " << status;
    // Nothing is written for a bad spec.
    const std::string path = TempPath("bad.gguf");
    EXPECT_FALSE(WriteSynthModel(spec, path).ok());
    EXPECT_FALSE(std::filesystem::exists(path));
  }
}

TEST(SynthSpecTest, PlanHasLlamaTensors) {
  const SynthSpec spec = SmallSpec(TensorType::kQ4_0);
  const std::vector<SynthTensor> plan = SynthTensorPlan(spec);
  ASSERT_EQ(plan.size(), 3u + 9u * spec.n_layers);
  std::map<std::string, const SynthTensor*> by_name;
  for (const SynthTensor& t : plan) by_name[t.name] = &t;
  EXPECT_EQ(by_name.size(), plan.size());
  EXPECT_EQ(plan[0].name, "token_embd.weight");
  EXPECT_EQ(by_name["token_embd.weight"]->shape, (std::vector<int64_t>{64, 320}));
  EXPECT_EQ(by_name["output.weight"]->shape, (std::vector<int64_t>{64, 320}));
  EXPECT_EQ(by_name["output_norm.weight"]->type, TensorType::kF32);
  EXPECT_EQ(by_name["output_norm.weight"]->init, SynthInit::kNormGain);
  EXPECT_EQ(by_name["blk.1.attn_q.weight"]->shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(by_name["blk.1.attn_k.weight"]->shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(by_name["blk.1.attn_v.weight"]->shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(by_name["blk.1.ffn_gate.weight"]->shape, (std::vector<int64_t>{64, 160}));
  EXPECT_EQ(by_name["blk.1.ffn_down.weight"]->shape, (std::vector<int64_t>{160, 64}));
  EXPECT_EQ(by_name["blk.1.ffn_down.weight"]->type, TensorType::kQ4_0);  // 160 = 5 blocks
  EXPECT_EQ(by_name["blk.0.ffn_norm.weight"]->type, TensorType::kF32);

  SynthSpec tied = spec;
  tied.tied_output = true;
  const std::vector<SynthTensor> tied_plan = SynthTensorPlan(tied);
  EXPECT_EQ(tied_plan.size(), plan.size() - 1);
  for (const SynthTensor& t : tied_plan) EXPECT_NE(t.name, "output.weight");
}

TEST(SynthSpecTest, PlanKeepsPartialBlockRowsInF32) {
  SynthSpec spec = SmallSpec(TensorType::kQ8_0);
  spec.hidden_dim = 172;  // stories260K's: not a multiple of 32
  for (const SynthTensor& t : SynthTensorPlan(spec)) {
    const bool down = t.name.ends_with("ffn_down.weight");
    const bool norm = t.init == SynthInit::kNormGain;
    EXPECT_EQ(t.type, down || norm ? TensorType::kF32 : TensorType::kQ8_0) << t.name;
  }
}

TEST(SynthSpecTest, MoePlanHasStackedExperts) {
  const SynthSpec spec = SmallMoeSpec(TensorType::kQ8_0);
  std::map<std::string, SynthTensor> by_name;
  for (const SynthTensor& t : SynthTensorPlan(spec)) by_name[t.name] = t;
  EXPECT_EQ(by_name.size(), 3u + 10u * spec.n_layers);
  EXPECT_FALSE(by_name.contains("blk.0.ffn_gate.weight"));
  EXPECT_FALSE(by_name.contains("blk.0.ffn_up.weight"));
  EXPECT_FALSE(by_name.contains("blk.0.ffn_down.weight"));
  EXPECT_EQ(by_name["blk.1.ffn_gate_inp.weight"].shape, (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(by_name["blk.1.ffn_gate_inp.weight"].type, TensorType::kF32);
  EXPECT_EQ(by_name["blk.1.ffn_gate_exps.weight"].shape, (std::vector<int64_t>{64, 64, 4}));
  EXPECT_EQ(by_name["blk.1.ffn_up_exps.weight"].shape, (std::vector<int64_t>{64, 64, 4}));
  EXPECT_EQ(by_name["blk.1.ffn_down_exps.weight"].shape, (std::vector<int64_t>{64, 64, 4}));
  EXPECT_EQ(by_name["blk.1.ffn_down_exps.weight"].type, TensorType::kQ8_0);
}

// ---- Written files -----------------------------------------------------------------------

// Opens `path`, checks its config and vocabulary against `spec`, and every tensor's bytes
// against QuantizeRow applied to SynthTensorValues.
void CheckWrittenModel(const SynthSpec& spec, const std::string& path) {
  std::unique_ptr<ModelFile> model = OpenOrDie(path);
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.dim, spec.dim);
  EXPECT_EQ(c.hidden_dim, spec.hidden_dim);
  EXPECT_EQ(c.n_layers, spec.n_layers);
  EXPECT_EQ(c.n_heads, spec.n_heads);
  EXPECT_EQ(c.n_kv_heads, spec.n_kv_heads);
  EXPECT_EQ(c.vocab_size, spec.vocab_size);
  EXPECT_EQ(c.context_length, spec.context_length);
  EXPECT_EQ(c.rope_freq_base, spec.rope_freq_base);
  EXPECT_EQ(c.rms_norm_eps, spec.rms_eps);
  EXPECT_EQ(c.tied_output, spec.tied_output);
  EXPECT_EQ(c.n_experts, spec.n_experts);
  EXPECT_EQ(c.n_experts_used, spec.n_experts_used);

  absl::StatusOr<Vocabulary> vocab = SynthVocabulary(spec.vocab_size);
  ASSERT_TRUE(vocab.ok());
  ASSERT_TRUE(model->vocabulary().has_value());
  const Vocabulary& read = *model->vocabulary();
  EXPECT_EQ(read.pieces, vocab->pieces);
  EXPECT_EQ(read.scores, vocab->scores);
  EXPECT_EQ(read.kinds, vocab->kinds);
  EXPECT_EQ(read.bos_id, 1);
  EXPECT_EQ(read.eos_id, 2);
  EXPECT_EQ(read.unk_id, 0);
  EXPECT_TRUE(read.add_bos);

  std::map<std::string, std::string> meta = Metadata(*model);
  EXPECT_EQ(meta["general.name"].find(spec.name) != std::string::npos, true)
      << meta["general.name"];
  EXPECT_EQ(meta["synth.seed"], std::to_string(spec.seed));
  EXPECT_EQ(meta["synth.version"], std::to_string(kSynthVersion));
  EXPECT_EQ(meta["llama.rope.dimension_count"], std::to_string(spec.dim / spec.n_heads));

  const std::vector<SynthTensor> plan = SynthTensorPlan(spec);
  ASSERT_EQ(model->tensors().size(), plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const SynthTensor& want = plan[i];
    const TensorView& got = model->tensors()[i];  // in plan order
    SCOPED_TRACE(want.name);
    ASSERT_EQ(got.name, want.name);
    EXPECT_EQ(got.type, want.type);
    EXPECT_EQ(got.shape, want.shape);
    const size_t row_bytes = TensorBytes(want.type, want.cols());
    ASSERT_EQ(got.bytes, row_bytes * want.rows());
    std::vector<float> values(want.cols());
    std::vector<uint8_t> expected(row_bytes);
    for (int64_t r = 0; r < want.rows(); ++r) {
      SynthTensorValues(spec, want, r * want.cols(), values);
      QuantizeRow(want.type, values, expected.data());
      ASSERT_EQ(std::memcmp(static_cast<const uint8_t*>(got.data) + r * row_bytes, expected.data(),
                            row_bytes),
                0)
          << "row " << r;
    }
  }
}

class SynthWriteTypeTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(SynthWriteTypeTest, DenseModelRoundTrips) {
  const SynthSpec spec = SmallSpec(GetParam());
  const std::string path = TempPath("dense-" + std::string(TensorTypeName(GetParam())) + ".gguf");
  ASSERT_TRUE(WriteSynthModel(spec, path).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  CheckWrittenModel(spec, path);
  std::unique_ptr<ModelFile> model = OpenOrDie(path);
  static const std::map<TensorType, std::string> kFileType = {{TensorType::kF32, "0"},
                                                              {TensorType::kF16, "1"},
                                                              {TensorType::kQ4_0, "2"},
                                                              {TensorType::kQ8_0, "7"},
                                                              {TensorType::kBF16, "32"}};
  EXPECT_EQ(Metadata(*model)["general.file_type"], kFileType.at(GetParam()));
}

TEST_P(SynthWriteTypeTest, MoeModelRoundTrips) {
  const SynthSpec spec = SmallMoeSpec(GetParam());
  const std::string path = TempPath("moe-" + std::string(TensorTypeName(GetParam())) + ".gguf");
  ASSERT_TRUE(WriteSynthModel(spec, path).ok());
  CheckWrittenModel(spec, path);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, SynthWriteTypeTest,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16,
                                           TensorType::kQ8_0, TensorType::kQ4_0),
                         [](const auto& info) { return std::string(TensorTypeName(info.param)); });

TEST(SynthWriteTest, TiedAndPartialBlockModelsRoundTrip) {
  SynthSpec spec = SmallSpec(TensorType::kQ4_0);
  spec.tied_output = true;
  spec.hidden_dim = 172;  // ffn_down stays f32
  spec.std = 0.5f;
  spec.rope_freq_base = 500000.0f;
  spec.rms_eps = 1e-6f;
  const std::string path = TempPath("tied.gguf");
  ASSERT_TRUE(WriteSynthModel(spec, path).ok());
  CheckWrittenModel(spec, path);
}

TEST(SynthWriteTest, SameSpecGivesIdenticalBytesForAnyThreadCount) {
  const SynthSpec spec = SmallMoeSpec(TensorType::kQ4_0);
  const std::string a = TempPath("same-a.gguf");
  const std::string b = TempPath("same-b.gguf");
  ASSERT_TRUE(WriteSynthModel(spec, a, 1).ok());
  ASSERT_TRUE(WriteSynthModel(spec, b, 3).ok());
  EXPECT_EQ(testing::ReadFile(a), testing::ReadFile(b));
}

TEST(SynthWriteTest, DifferentSeedGivesDifferentWeights) {
  SynthSpec spec = SmallSpec(TensorType::kQ8_0);
  const std::string a = TempPath("seed-a.gguf");
  const std::string b = TempPath("seed-b.gguf");
  ASSERT_TRUE(WriteSynthModel(spec, a).ok());
  spec.seed += 1;
  ASSERT_TRUE(WriteSynthModel(spec, b).ok());
  std::unique_ptr<ModelFile> ma = OpenOrDie(a);
  std::unique_ptr<ModelFile> mb = OpenOrDie(b);
  ASSERT_TRUE(ma && mb);
  ASSERT_EQ(ma->tensors().size(), mb->tensors().size());
  for (size_t i = 0; i < ma->tensors().size(); ++i) {
    const TensorView& ta = ma->tensors()[i];
    const TensorView& tb = mb->tensors()[i];
    ASSERT_EQ(ta.bytes, tb.bytes);
    EXPECT_EQ(ta.file_offset, tb.file_offset);  // same layout
    EXPECT_NE(std::memcmp(ta.data, tb.data, ta.bytes), 0) << ta.name;
  }
}

TEST(SynthWriteTest, OverwritesAnExistingFile) {
  const std::string path = TempPath("overwrite.gguf");
  SynthSpec spec = SmallSpec(TensorType::kF16);
  ASSERT_TRUE(WriteSynthModel(spec, path).ok());
  spec.n_layers = 1;
  ASSERT_TRUE(WriteSynthModel(spec, path).ok());
  std::unique_ptr<ModelFile> model = OpenOrDie(path);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().n_layers, 1);
}

// The presets named after ../shared's synthetic models have their exact layout: tensor
// names, types, shapes and data offsets.
void CheckSameLayout(const std::string& preset, TensorType type, const std::string& reference) {
  SCOPED_TRACE(preset);
  SynthSpec spec = *SynthPreset(preset);
  spec.weight_type = type;
  const std::string path = TempPath(preset + ".gguf");
  ASSERT_TRUE(WriteSynthModel(spec, path).ok());
  std::unique_ptr<ModelFile> ours = OpenOrDie(path);
  std::unique_ptr<ModelFile> theirs = OpenOrDie(testing::SharedPath("models/" + reference));
  ASSERT_TRUE(ours && theirs);
  const ModelConfig& a = ours->config();
  const ModelConfig& b = theirs->config();
  EXPECT_EQ(std::tie(a.dim, a.hidden_dim, a.n_layers, a.n_heads, a.n_kv_heads, a.vocab_size,
                     a.context_length, a.n_experts, a.n_experts_used, a.tied_output),
            std::tie(b.dim, b.hidden_dim, b.n_layers, b.n_heads, b.n_kv_heads, b.vocab_size,
                     b.context_length, b.n_experts, b.n_experts_used, b.tied_output));
  ASSERT_EQ(ours->tensors().size(), theirs->tensors().size());
  const uint64_t our_base = ours->tensors()[0].file_offset;
  const uint64_t their_base = theirs->tensors()[0].file_offset;
  for (size_t i = 0; i < ours->tensors().size(); ++i) {
    const TensorView& x = ours->tensors()[i];
    const TensorView& y = theirs->tensors()[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.type, y.type) << x.name;
    EXPECT_EQ(x.shape, y.shape) << x.name;
    EXPECT_EQ(x.file_offset - our_base, y.file_offset - their_base) << x.name;
  }
}

TEST(SynthWriteTest, PresetsMatchTheSharedSyntheticModels) {
  CheckSameLayout("mini", TensorType::kQ4_0, "mini-q4_0.gguf");
  CheckSameLayout("moe-mini", TensorType::kQ8_0, "moe-mini-q8_0.gguf");
}

// ---- shardrun synth ----------------------------------------------------------------------

TEST(SynthCommandTest, WritesWhatTheLibraryWrites) {
  const std::string path = TempPath("cli.gguf");
  const testing::CommandResult r =
      testing::RunShardrun({"synth", path, "--preset", "mini", "--type", "q4_0", "--layers", "2",
                            "--seed", "9", "--untied", "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  SynthSpec spec = *SynthPreset("mini");
  spec.weight_type = TensorType::kQ4_0;
  spec.n_layers = 2;
  spec.seed = 9;
  spec.name = "synthetic-custom";
  const std::string expected = TempPath("cli-expected.gguf");
  ASSERT_TRUE(WriteSynthModel(spec, expected).ok());
  EXPECT_EQ(testing::ReadFile(path), testing::ReadFile(expected));
}

TEST(SynthCommandTest, PresetAloneKeepsItsName) {
  const std::string path = TempPath("cli-moe.gguf");
  const testing::CommandResult r =
      testing::RunShardrun({"synth", path, "--preset", "moe-mini", "--seed", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::unique_ptr<ModelFile> model = OpenOrDie(path);
  ASSERT_NE(model, nullptr);
  EXPECT_NE(Metadata(*model)["general.name"].find("synthetic-moe-mini"), std::string::npos);
  EXPECT_EQ(model->config().n_experts, 8);
  EXPECT_EQ(model->config().n_experts_used, 2);
}

TEST(SynthCommandTest, ExpertsUsedFollowsExperts) {
  const std::string path = TempPath("cli-experts.gguf");
  testing::CommandResult r =
      testing::RunShardrun({"synth", path, "--preset", "mini", "--experts", "4", "--layers", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::unique_ptr<ModelFile> model = OpenOrDie(path);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().n_experts, 4);
  EXPECT_EQ(model->config().n_experts_used, 2);
  r = testing::RunShardrun({"synth", path, "--preset", "moe-mini", "--experts", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  model = OpenOrDie(path);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->config().n_experts, 0);
  EXPECT_NE(model->Find("blk.0.ffn_gate.weight"), nullptr);
}

TEST(SynthCommandTest, BadOptionsFailWithAMessage) {
  const std::string path = TempPath("cli-bad.gguf");
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  const std::vector<Case> cases = {
      {{"--heads", "7"}, "not a multiple of n_heads"},
      {{"--vocab", "100"}, "vocab_size 100"},
      {{"--type", "q5_k"}, "--type q5_k"},
      {{"--experts-used", "2"}, "needs n_experts"},
      {{"--experts", "4", "--experts-used", "5"}, "n_experts_used must be"},
      {{"--preset", "nope"}, "nope"},
      {{"--tied", "--untied"}, "excludes"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"synth", path};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const testing::CommandResult r = testing::RunShardrun(args);
    EXPECT_NE(r.exit_code, 0) << c.message;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.message << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(path));
  }
}

}  // namespace
}  // namespace shardrun
