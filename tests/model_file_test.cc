// Opens the real models in ../shared/models and checks what the readers report against what
// the README says about them, and that the formats agree with one another.
#include "model/model_file.h"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/quantize.h"

namespace shardrun {
namespace {

using ::testing::HasSubstr;

std::string ModelPath(const std::string& file) {
  return std::string(SHARDRUN_SHARED_DIR) + "/models/" + file;
}

std::unique_ptr<ModelFile> OpenModel(const std::string& file) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open(ModelPath(file));
  if (!model.ok()) {
    ADD_FAILURE() << model.status();
    return nullptr;
  }
  return *std::move(model);
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::vector<float> Dequantized(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.elements()));
  DequantizeRow(t.type, t.data, out, t.group_scales, t.group_size);
  return out;
}

std::string MetadataValue(const ModelFile& model, const std::string& key) {
  for (const auto& [k, v] : model.metadata()) {
    if (k == key) return v;
  }
  return "<absent>";
}

TEST(ModelFileTest, OpensEveryModelInShared) {
  int opened = 0;
  for (const auto& entry : std::filesystem::directory_iterator(ModelPath(""))) {
    const std::string file = entry.path().filename().string();
    if (file == "SHA256SUMS") continue;
    absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open(entry.path().string());
    if (file == "tok512.bin") {  // a tokenizer, not a model: must be refused, not crash
      ASSERT_FALSE(model.ok());
      EXPECT_THAT(model.status().message(), HasSubstr(entry.path().string()));
      continue;
    }
    ASSERT_TRUE(model.ok()) << file << ": " << model.status();
    EXPECT_TRUE(ValidateLlamaModel(**model).ok()) << file;
    EXPECT_FALSE((*model)->metadata().empty()) << file;
    EXPECT_EQ((*model)->file_size(), std::filesystem::file_size(entry.path())) << file;
    // Every tensor's data lies inside the file, where its offset says.
    for (const TensorView& t : (*model)->tensors()) {
      EXPECT_LE(t.file_offset + t.total_bytes(), (*model)->file_size()) << file << " " << t.name;
    }
    ++opened;
  }
  EXPECT_EQ(opened, 11);
}

struct StoriesCase {
  std::string file;
  ModelFormat format;
  int context_length;
  bool tied_output;
  size_t tensor_count;
};

class StoriesTest : public ::testing::TestWithParam<StoriesCase> {};

TEST_P(StoriesTest, ConfigAndShapes) {
  const StoriesCase& p = GetParam();
  std::unique_ptr<ModelFile> model = OpenModel(p.file);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->format(), p.format);
  const ModelConfig& c = model->config();
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.context_length, p.context_length);
  EXPECT_EQ(c.head_size(), 8);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_FLOAT_EQ(c.rope_freq_base, 10000.0f);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.tied_output, p.tied_output);
  EXPECT_FALSE(c.is_moe());
  EXPECT_EQ(model->tensors().size(), p.tensor_count);

  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"token_embd.weight", {64, 512}},       {"output_norm.weight", {64}},
      {"blk.0.attn_norm.weight", {64}},       {"blk.4.attn_q.weight", {64, 64}},
      {"blk.4.attn_k.weight", {64, 32}},      {"blk.2.attn_v.weight", {64, 32}},
      {"blk.1.attn_output.weight", {64, 64}}, {"blk.3.ffn_norm.weight", {64}},
      {"blk.3.ffn_gate.weight", {64, 172}},   {"blk.3.ffn_down.weight", {172, 64}},
      {"blk.3.ffn_up.weight", {64, 172}}};
  for (const auto& [name, shape] : shapes) {
    const TensorView* t = model->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, shape) << name;
    EXPECT_EQ(t->name, name);
  }
  EXPECT_EQ(model->Find("output.weight") != nullptr, !p.tied_output);
  EXPECT_EQ(model->Find("blk.5.attn_q.weight"), nullptr);
  EXPECT_EQ(model->Find("nonexistent"), nullptr);
  // Norms are float32 in every format.
  EXPECT_EQ(model->Find("blk.0.attn_norm.weight")->type, TensorType::kF32);
  EXPECT_EQ(model->Find("output_norm.weight")->type, TensorType::kF32);
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, StoriesTest,
    ::testing::Values(StoriesCase{"stories260K.bin", ModelFormat::kLlama2cLegacy, 512, true, 47},
                      StoriesCase{"stories260K-v1.bin", ModelFormat::kLlama2cV1, 512, true, 47},
                      StoriesCase{"stories260K-v2-gs4.bin", ModelFormat::kLlama2cV2, 512, true, 47},
                      StoriesCase{"stories260K.gguf", ModelFormat::kGguf, 2048, false, 48},
                      StoriesCase{"stories260K-q8_0.gguf", ModelFormat::kGguf, 512, false, 48}),
    [](const auto& info) {
      std::string name = info.param.file;
      std::replace_if(
          name.begin(), name.end(), [](char c) { return !std::isalnum(c); }, '_');
      return name;
    });

TEST(ModelFileTest, StoriesTypes) {
  std::unique_ptr<ModelFile> q8 = OpenModel("stories260K-q8_0.gguf");
  ASSERT_NE(q8, nullptr);
  EXPECT_EQ(q8->Find("blk.0.attn_q.weight")->type, TensorType::kQ8_0);
  EXPECT_EQ(q8->Find("token_embd.weight")->type, TensorType::kQ8_0);
  // Rows of 172 are not whole Q8_0 blocks, so ffn_down stays float32.
  EXPECT_EQ(q8->Find("blk.0.ffn_down.weight")->type, TensorType::kF32);

  std::unique_ptr<ModelFile> v2 = OpenModel("stories260K-v2-gs4.bin");
  ASSERT_NE(v2, nullptr);
  const TensorView* wq = v2->Find("blk.0.attn_q.weight");
  EXPECT_EQ(wq->type, TensorType::kQ8Group);
  EXPECT_EQ(wq->group_size, 4);
  EXPECT_EQ(wq->bytes, 64u * 64u);
  EXPECT_EQ(wq->total_bytes(), 64u * 64u + 64u * 64u / 4u * 4u);
  // Scales follow their values directly.
  EXPECT_EQ(reinterpret_cast<const uint8_t*>(wq->group_scales),
            static_cast<const uint8_t*>(wq->data) + wq->bytes);
  EXPECT_EQ(MetadataValue(*v2, "llama2c.group_size"), "4");

  std::unique_ptr<ModelFile> bin = OpenModel("stories260K.bin");
  ASSERT_NE(bin, nullptr);
  for (const TensorView& t : bin->tensors()) EXPECT_EQ(t.type, TensorType::kF32) << t.name;
  // The first tensor starts right after the 7-int header.
  EXPECT_EQ(bin->Find("token_embd.weight")->file_offset, 28u);
  EXPECT_EQ(bin->tensors().front().name, "token_embd.weight");
  EXPECT_FALSE(bin->vocabulary().has_value());
}

// The README: the .bin, -v1.bin and .gguf hold bit-identical tensors.
TEST(ModelFileTest, StoriesFormatsHoldIdenticalTensors) {
  std::unique_ptr<ModelFile> bin = OpenModel("stories260K.bin");
  std::unique_ptr<ModelFile> v1 = OpenModel("stories260K-v1.bin");
  std::unique_ptr<ModelFile> gguf = OpenModel("stories260K.gguf");
  ASSERT_TRUE(bin && v1 && gguf);
  for (const TensorView& t : bin->tensors()) {
    for (const ModelFile* other : {v1.get(), gguf.get()}) {
      const TensorView* o = other->Find(t.name);
      ASSERT_NE(o, nullptr) << other->path() << " " << t.name;
      EXPECT_EQ(o->shape, t.shape) << t.name;
      EXPECT_EQ(o->type, TensorType::kF32) << t.name;
      ASSERT_EQ(o->bytes, t.bytes) << t.name;
      EXPECT_EQ(std::memcmp(o->data, t.data, t.bytes), 0) << other->path() << " " << t.name;
    }
  }
  // The .gguf stores the shared classifier as its own copy of the embedding.
  const TensorView* output = gguf->Find("output.weight");
  const TensorView* embd = bin->Find("token_embd.weight");
  ASSERT_NE(output, nullptr);
  ASSERT_EQ(output->bytes, embd->bytes);
  EXPECT_EQ(std::memcmp(output->data, embd->data, embd->bytes), 0);
}

// Version 2's int8 groups decode to within half a quantization step of version 1's floats.
TEST(ModelFileTest, V2DequantizesToV1Weights) {
  std::unique_ptr<ModelFile> v1 = OpenModel("stories260K-v1.bin");
  std::unique_ptr<ModelFile> v2 = OpenModel("stories260K-v2-gs4.bin");
  ASSERT_TRUE(v1 && v2);
  int quantized = 0;
  for (const TensorView& q : v2->tensors()) {
    const TensorView* f = v1->Find(q.name);
    ASSERT_NE(f, nullptr) << q.name;
    ASSERT_EQ(f->elements(), q.elements()) << q.name;
    const std::vector<float> want = Dequantized(*f);
    const std::vector<float> got = Dequantized(q);
    if (q.type == TensorType::kF32) {
      EXPECT_EQ(want, got) << q.name;
      continue;
    }
    ++quantized;
    ASSERT_EQ(q.type, TensorType::kQ8Group) << q.name;
    for (size_t i = 0; i < want.size(); ++i) {
      const float scale = q.group_scales[i / q.group_size];
      ASSERT_LE(std::fabs(want[i] - got[i]), 0.5f * scale + 1e-6f) << q.name << "[" << i << "]";
    }
  }
  EXPECT_EQ(quantized, 1 + 5 * 7);
}

// Quantized GGUF files decode to within their blocks' quantization step of the f32 file.
void ExpectCloseToF32(const std::string& f32_file, const std::string& other_file,
                      TensorType expected_type) {
  std::unique_ptr<ModelFile> f32 = OpenModel(f32_file);
  std::unique_ptr<ModelFile> other = OpenModel(other_file);
  ASSERT_TRUE(f32 && other);
  ASSERT_EQ(f32->tensors().size(), other->tensors().size());
  int of_type = 0;
  for (const TensorView& t : other->tensors()) {
    const TensorView* f = f32->Find(t.name);
    ASSERT_NE(f, nullptr) << t.name;
    ASSERT_EQ(f->shape, t.shape) << t.name;
    if (t.type == expected_type) ++of_type;
    const std::vector<float> want = Dequantized(*f);
    const std::vector<float> got = Dequantized(t);
    float amax = 0.0f, max_error = 0.0f;
    for (size_t i = 0; i < want.size(); ++i) {
      amax = std::max(amax, std::fabs(want[i]));
      max_error = std::max(max_error, std::fabs(want[i] - got[i]));
    }
    // q4_0 has 16 levels, q8_0 255, f16 11 mantissa bits: generous bounds per type.
    const float bound = t.type == TensorType::kQ4_0   ? amax / 7.0f
                        : t.type == TensorType::kQ8_0 ? amax / 127.0f
                        : t.type == TensorType::kF16  ? amax / 1024.0f
                                                      : 0.0f;
    EXPECT_LE(max_error, bound) << other_file << " " << t.name;
  }
  EXPECT_GT(of_type, 0) << other_file;
}

// The synthetic models draw each file's weights separately (normal, std 0.02), so quantized
// ones cannot be compared with the f32 one; their decoded matrices must have that spread.
void ExpectSyntheticSpread(const ModelFile& model) {
  for (const TensorView& t : model.tensors()) {
    if (t.shape.size() < 2) continue;  // norms
    double sum_squares = 0.0;
    for (float x : Dequantized(t)) {
      ASSERT_TRUE(std::isfinite(x)) << model.path() << " " << t.name;
      sum_squares += static_cast<double>(x) * x;
    }
    const double rms = std::sqrt(sum_squares / static_cast<double>(t.elements()));
    EXPECT_GT(rms, 0.015) << model.path() << " " << t.name;
    EXPECT_LT(rms, 0.025) << model.path() << " " << t.name;
  }
}

TEST(ModelFileTest, StoriesQ8_0DecodesToF32Weights) {
  ExpectCloseToF32("stories260K.gguf", "stories260K-q8_0.gguf", TensorType::kQ8_0);
}

TEST(ModelFileTest, MiniModels) {
  for (const auto& [file, type] :
       {std::pair<std::string, TensorType>{"mini-f32.gguf", TensorType::kF32},
        {"mini-f16.gguf", TensorType::kF16},
        {"mini-q8_0.gguf", TensorType::kQ8_0},
        {"mini-q4_0.gguf", TensorType::kQ4_0}}) {
    std::unique_ptr<ModelFile> model = OpenModel(file);
    ASSERT_NE(model, nullptr);
    const ModelConfig& c = model->config();
    EXPECT_EQ(c.dim, 256) << file;
    EXPECT_EQ(c.hidden_dim, 768) << file;
    EXPECT_EQ(c.n_layers, 4) << file;
    EXPECT_EQ(c.n_heads, 8) << file;
    EXPECT_EQ(c.n_kv_heads, 2) << file;
    EXPECT_EQ(c.vocab_size, 2048) << file;
    EXPECT_EQ(c.context_length, 512) << file;
    EXPECT_FALSE(c.tied_output) << file;
    EXPECT_EQ(model->Find("blk.3.attn_q.weight")->type, type) << file;
    EXPECT_EQ(model->Find("blk.3.attn_k.weight")->shape, (std::vector<int64_t>{256, 64}));
    EXPECT_EQ(model->Find("blk.3.ffn_norm.weight")->type, TensorType::kF32) << file;
    // GGUF tensor data starts on the file's alignment.
    for (const TensorView& t : model->tensors()) EXPECT_EQ(t.file_offset % 32, 0u) << t.name;
    ASSERT_TRUE(model->vocabulary().has_value());
    EXPECT_EQ(model->vocabulary()->size(), 2048);
    ExpectSyntheticSpread(*model);
    if (type == TensorType::kF16) ExpectCloseToF32("mini-f32.gguf", file, type);
  }
}

TEST(ModelFileTest, MoeModels) {
  for (const auto& [file, type] :
       {std::pair<std::string, TensorType>{"moe-mini-f32.gguf", TensorType::kF32},
        {"moe-mini-q8_0.gguf", TensorType::kQ8_0}}) {
    std::unique_ptr<ModelFile> model = OpenModel(file);
    ASSERT_NE(model, nullptr);
    const ModelConfig& c = model->config();
    EXPECT_EQ(c.dim, 128) << file;
    EXPECT_EQ(c.hidden_dim, 256) << file;
    EXPECT_EQ(c.n_layers, 4) << file;
    EXPECT_EQ(c.n_heads, 8) << file;
    EXPECT_EQ(c.n_kv_heads, 4) << file;
    EXPECT_EQ(c.vocab_size, 1024) << file;
    EXPECT_TRUE(c.is_moe()) << file;
    EXPECT_EQ(c.n_experts, 8) << file;
    EXPECT_EQ(c.n_experts_used, 2) << file;
    for (int layer = 0; layer < 4; ++layer) {
      const TensorView* router = model->Find(LayerTensorName(layer, "ffn_gate_inp"));
      ASSERT_NE(router, nullptr);
      EXPECT_EQ(router->shape, (std::vector<int64_t>{128, 8}));
      EXPECT_EQ(router->type, TensorType::kF32);
      const TensorView* gate = model->Find(LayerTensorName(layer, "ffn_gate_exps"));
      const TensorView* up = model->Find(LayerTensorName(layer, "ffn_up_exps"));
      const TensorView* down = model->Find(LayerTensorName(layer, "ffn_down_exps"));
      ASSERT_TRUE(gate && up && down);
      EXPECT_EQ(gate->shape, (std::vector<int64_t>{128, 256, 8}));
      EXPECT_EQ(up->shape, (std::vector<int64_t>{128, 256, 8}));
      EXPECT_EQ(down->shape, (std::vector<int64_t>{256, 128, 8}));
      EXPECT_EQ(gate->type, type);
      EXPECT_EQ(gate->rows(), 256 * 8);
      EXPECT_EQ(model->Find(LayerTensorName(layer, "ffn_gate")), nullptr);
    }
    ExpectSyntheticSpread(*model);
  }
}

TEST(ModelFileTest, GgufVocabularyMatchesTok512) {
  std::unique_ptr<ModelFile> model = OpenModel("stories260K.gguf");
  ASSERT_NE(model, nullptr);
  ASSERT_TRUE(model->vocabulary().has_value());
  const Vocabulary& v = *model->vocabulary();
  EXPECT_EQ(v.style, VocabularyStyle::kSentencePiece);
  ASSERT_EQ(v.size(), 512);
  ASSERT_EQ(v.scores.size(), 512u);
  ASSERT_EQ(v.kinds.size(), 512u);
  EXPECT_EQ(v.pieces[0], "<unk>");
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.pieces[2], "</s>");
  EXPECT_EQ(v.pieces[3], "<0x00>");
  EXPECT_EQ(v.pieces[259], "\u2581t");
  EXPECT_EQ(v.kinds[0], TokenKind::kUnknown);
  EXPECT_EQ(v.kinds[1], TokenKind::kControl);
  EXPECT_EQ(v.kinds[3], TokenKind::kByte);
  EXPECT_EQ(v.kinds[300], TokenKind::kNormal);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_TRUE(v.add_bos);
  EXPECT_TRUE(v.add_space_prefix);
  EXPECT_EQ(v.max_piece_length, 9);

  // tok512.bin (llama2.c's tokenizer file) holds the same pieces, with plain spaces, and
  // the same scores: int32 max length, then per token float32 score, int32 length, bytes.
  const std::vector<uint8_t> tok = ReadBytes(ModelPath("tok512.bin"));
  size_t pos = 4;
  for (int i = 0; i < 512; ++i) {
    ASSERT_LE(pos + 8, tok.size());
    float score;
    int32_t length;
    std::memcpy(&score, &tok[pos], 4);
    std::memcpy(&length, &tok[pos + 4], 4);
    pos += 8;
    ASSERT_LE(pos + length, tok.size());
    std::string piece(reinterpret_cast<const char*>(&tok[pos]), length);
    pos += length;
    EXPECT_EQ(v.scores[i], score) << i;
    if (i < 3) continue;  // llama2.c spells <s> and </s> with newlines around them
    const std::string& gguf_piece = v.pieces[i];
    std::string spaced;  // U+2581 (3 bytes in UTF-8) back to a space
    for (size_t k = 0; k < gguf_piece.size();) {
      if (gguf_piece.compare(k, 3, "\u2581") == 0) {
        spaced += ' ';
        k += 3;
      } else {
        spaced += gguf_piece[k++];
      }
    }
    EXPECT_EQ(spaced, piece) << i;
  }
}

TEST(ModelFileTest, Metadata) {
  std::unique_ptr<ModelFile> gguf = OpenModel("stories260K.gguf");
  ASSERT_NE(gguf, nullptr);
  EXPECT_EQ(MetadataValue(*gguf, "gguf.version"), "3");
  EXPECT_EQ(MetadataValue(*gguf, "gguf.tensor_count"), "48");
  EXPECT_EQ(MetadataValue(*gguf, "gguf.alignment"), "32");
  EXPECT_EQ(MetadataValue(*gguf, "general.architecture"), "llama");
  EXPECT_EQ(MetadataValue(*gguf, "llama.block_count"), "5");
  EXPECT_EQ(MetadataValue(*gguf, "tokenizer.ggml.tokens"), "[512 values]");
  EXPECT_EQ(MetadataValue(*gguf, "tokenizer.ggml.padding_token_id"), "4294967295");
  EXPECT_EQ(gguf->config().name, "llama");

  std::unique_ptr<ModelFile> bin = OpenModel("stories260K.bin");
  ASSERT_NE(bin, nullptr);
  EXPECT_EQ(MetadataValue(*bin, "llama2c.shared_classifier"), "true");
  EXPECT_EQ(MetadataValue(*bin, "llama2c.vocab_size"), "512");
  EXPECT_EQ(ModelFormatName(bin->format()), "llama2.c legacy");
}

// Parse on memory gives what Open gives on the file, with views into that memory.
TEST(ModelFileTest, ParseMatchesOpen) {
  for (const std::string file : {"stories260K.gguf", "stories260K-v2-gs4.bin"}) {
    const std::vector<uint8_t> bytes = ReadBytes(ModelPath(file));
    absl::StatusOr<std::unique_ptr<ModelFile>> parsed =
        ModelFile::Parse(file, bytes.data(), bytes.size());
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    std::unique_ptr<ModelFile> opened = OpenModel(file);
    ASSERT_NE(opened, nullptr);
    EXPECT_EQ((*parsed)->path(), file);
    ASSERT_EQ((*parsed)->tensors().size(), opened->tensors().size());
    for (size_t i = 0; i < opened->tensors().size(); ++i) {
      const TensorView& p = (*parsed)->tensors()[i];
      const TensorView& o = opened->tensors()[i];
      EXPECT_EQ(p.name, o.name);
      EXPECT_EQ(p.shape, o.shape);
      EXPECT_EQ(p.file_offset, o.file_offset);
      EXPECT_EQ(static_cast<const uint8_t*>(p.data), bytes.data() + p.file_offset);
      EXPECT_EQ(std::memcmp(p.data, o.data, o.bytes), 0);
    }
    EXPECT_EQ((*parsed)->metadata(), opened->metadata());
  }
}

TEST(ModelFileTest, LayerTensorName) {
  EXPECT_EQ(LayerTensorName(3, "attn_q"), "blk.3.attn_q.weight");
  EXPECT_EQ(LayerTensorName(0, "ffn_down_exps"), "blk.0.ffn_down_exps.weight");
}

// `shardrun inspect` on a real file and on a broken one. Skipped while the executable is not
// built (it links every subcommand; this test binary does not depend on it).
std::pair<int, std::string> RunShardrun(const std::string& args) {
  const std::string command = std::string(SHARDRUN_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  for (size_t n; pipe && (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;)
    output.append(buffer, n);
  const int status = pipe ? pclose(pipe) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(InspectCommandTest, PrintsTableAndFailsOnBadFile) {
  if (!std::filesystem::exists(SHARDRUN_BINARY)) GTEST_SKIP() << SHARDRUN_BINARY << " not built";
  auto [code, out] = RunShardrun("inspect " + ModelPath("stories260K.gguf"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("blk.4.ffn_down.weight"));
  EXPECT_THAT(out, HasSubstr("tokenizer.ggml.tokens"));
  EXPECT_THAT(out, HasSubstr("[512 values]"));
  EXPECT_THAT(out, HasSubstr("1171200"));  // total tensor bytes: 292800 floats

  auto [bad_code, bad_out] = RunShardrun("inspect " + ModelPath("tok512.bin"));
  EXPECT_EQ(bad_code, 1) << bad_out;
  EXPECT_THAT(bad_out, HasSubstr("tok512.bin"));
}

}  // namespace
}  // namespace shardrun
