// A corpus of broken model files, built here in memory: truncations of the real models, and
// tiny GGUF and llama2.c models with one thing wrong each. Every one must give an error that
// names the file and the problem; none may crash (run this under ASan+UBSan).
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/tensor_type.h"
#include "model/model_file.h"

namespace shardrun {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// ---------------------------------------------------------------------------------------
// Encoders and builders.

template <typename T>
std::string Bytes(T value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

std::string Str(std::string_view s) { return Bytes<uint64_t>(s.size()) + std::string(s); }

enum GgufType : uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kStr,
  kArr,
  kU64,
  kI64,
  kF64,
};

// Writes GGUF files, correct unless a test sets one of the knobs that break them.
class GgufBuilder {
 public:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type = kGgmlTypeF32;
    std::optional<uint64_t> offset;       // else laid out in order
    uint64_t gap = 0;                     // extra bytes before this tensor's data
    std::optional<uint64_t> name_length;  // else name.size()
  };

  std::string magic = "GGUF";
  uint32_t version = 3;
  std::optional<uint64_t> tensor_count;  // else the number of tensors
  std::optional<uint64_t> kv_count;      // else the number of entries
  uint64_t alignment = 32;               // used for the layout (set general.alignment too)

  void Set(const std::string& key, uint32_t type, std::string value) {
    for (auto& entry : entries_) {
      if (entry.first == key) {
        entry.second = Bytes(type) + value;
        return;
      }
    }
    entries_.emplace_back(key, Bytes(type) + value);
  }
  void SetU32(const std::string& key, uint32_t v) { Set(key, kU32, Bytes(v)); }
  void SetI32(const std::string& key, int32_t v) { Set(key, kI32, Bytes(v)); }
  void SetU64(const std::string& key, uint64_t v) { Set(key, kU64, Bytes(v)); }
  void SetF32(const std::string& key, float v) { Set(key, kF32, Bytes(v)); }
  void SetBool(const std::string& key, bool v) { Set(key, kBool, Bytes<uint8_t>(v)); }
  void SetString(const std::string& key, std::string_view s) { Set(key, kStr, Str(s)); }
  void SetStrings(const std::string& key, const std::vector<std::string>& values) {
    std::string v = Bytes<uint32_t>(kStr) + Bytes<uint64_t>(values.size());
    for (const auto& s : values) v += Str(s);
    Set(key, kArr, v);
  }
  template <typename T>
  void SetArray(const std::string& key, uint32_t element_type, const std::vector<T>& values) {
    std::string v = Bytes<uint32_t>(element_type) + Bytes<uint64_t>(values.size());
    for (T x : values) v += Bytes(x);
    Set(key, kArr, v);
  }
  void Remove(const std::string& key) {
    std::erase_if(entries_, [&](const auto& e) { return e.first == key; });
  }
  // An entry written verbatim after the others (key included), counted in kv_count.
  void AddRawEntry(std::string bytes) { raw_entries_.push_back(std::move(bytes)); }

  Tensor& AddTensor(std::string name, std::vector<uint64_t> dims, uint32_t type = kGgmlTypeF32) {
    Tensor t;
    t.name = std::move(name);
    t.dims = std::move(dims);
    t.type = type;
    tensors_.push_back(std::move(t));
    return tensors_.back();
  }
  Tensor& tensor(const std::string& name) {
    for (Tensor& t : tensors_) {
      if (t.name == name) return t;
    }
    ADD_FAILURE() << "no tensor " << name;
    return tensors_.front();
  }
  void RemoveTensor(const std::string& name) {
    std::erase_if(tensors_, [&](const Tensor& t) { return t.name == name; });
  }

  size_t HeaderBytes() const { return Header().size(); }

  std::string Build() const {
    std::string out = Header();
    const uint64_t data_start = AlignUp(out.size());
    out.resize(data_start, '\0');
    const std::vector<uint64_t> offsets = Layout();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const uint64_t bytes = DataBytes(tensors_[i]);
      out.resize(std::max<uint64_t>(out.size(), data_start + offsets[i] + bytes), '\0');
      for (uint64_t b = 0; b < bytes; ++b) {  // a recognisable pattern, different per tensor
        out[data_start + offsets[i] + b] = static_cast<char>((b * 7 + i * 13) & 0x3f);
      }
    }
    return out;
  }

 private:
  uint64_t AlignUp(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }

  static uint64_t DataBytes(const Tensor& t) {
    uint64_t elements = 1;
    for (uint64_t d : t.dims) {
      if (d == 0 || d > (uint64_t{1} << 20) || elements * d > (uint64_t{1} << 20)) return 64;
      elements *= d;
    }
    std::optional<TensorType> type = TensorTypeFromGgml(t.type);
    if (!type.has_value()) return 64;
    const uint64_t block = BlockElements(*type);
    return (elements + block - 1) / block * BlockBytes(*type);
  }

  std::vector<uint64_t> Layout() const {
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      next = AlignUp(next) + t.gap;
      offsets.push_back(next);
      next += DataBytes(t);
    }
    return offsets;
  }

  std::string Header() const {
    std::string out = magic + Bytes(version);
    out += Bytes<uint64_t>(tensor_count.value_or(tensors_.size()));
    out += Bytes<uint64_t>(kv_count.value_or(entries_.size() + raw_entries_.size()));
    for (const auto& [key, value] : entries_) out += Str(key) + value;
    for (const std::string& raw : raw_entries_) out += raw;
    const std::vector<uint64_t> offsets = Layout();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      out += Bytes<uint64_t>(t.name_length.value_or(t.name.size())) + t.name;
      out += Bytes<uint32_t>(t.dims.size());
      for (uint64_t d : t.dims) out += Bytes(d);
      out += Bytes(t.type) + Bytes<uint64_t>(t.offset.value_or(offsets[i]));
    }
    return out;
  }

  std::vector<std::pair<std::string, std::string>> entries_;
  std::vector<std::string> raw_entries_;
  std::vector<Tensor> tensors_;
};

constexpr char kGgufName[] = "tiny.gguf";
constexpr char kBinName[] = "tiny.bin";

// A valid llama model: dim 8, hidden 12, 2 layers, 2 heads of 4, 1 KV head, vocab 16,
// context 32, f32 weights, its own classifier, a 16-token vocabulary.
GgufBuilder TinyGguf() {
  GgufBuilder b;
  b.SetString("general.architecture", "llama");
  b.SetString("general.name", "tiny");
  b.SetU32("llama.context_length", 32);
  b.SetU32("llama.embedding_length", 8);
  b.SetU32("llama.feed_forward_length", 12);
  b.SetU32("llama.block_count", 2);
  b.SetU32("llama.attention.head_count", 2);
  b.SetU32("llama.attention.head_count_kv", 1);
  b.SetU32("llama.rope.dimension_count", 4);
  b.SetF32("llama.rope.freq_base", 10000.0f);
  b.SetF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  b.SetString("tokenizer.ggml.model", "llama");
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  for (int i = 3; i < 16; ++i) {
    tokens.push_back(std::string(1, static_cast<char>('a' + i)));
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  b.SetStrings("tokenizer.ggml.tokens", tokens);
  b.SetArray("tokenizer.ggml.scores", kF32, scores);
  b.SetArray("tokenizer.ggml.token_type", kI32, types);
  b.SetU32("tokenizer.ggml.bos_token_id", 1);
  b.SetU32("tokenizer.ggml.eos_token_id", 2);
  b.SetU32("tokenizer.ggml.unknown_token_id", 0);
  b.SetBool("tokenizer.ggml.add_bos_token", true);
  b.AddTensor("token_embd.weight", {8, 16});
  b.AddTensor("output_norm.weight", {8});
  b.AddTensor("output.weight", {8, 16});
  for (int l = 0; l < 2; ++l) {
    b.AddTensor(LayerTensorName(l, "attn_norm"), {8});
    b.AddTensor(LayerTensorName(l, "attn_q"), {8, 8});
    b.AddTensor(LayerTensorName(l, "attn_k"), {8, 4});
    b.AddTensor(LayerTensorName(l, "attn_v"), {8, 4});
    b.AddTensor(LayerTensorName(l, "attn_output"), {8, 8});
    b.AddTensor(LayerTensorName(l, "ffn_norm"), {8});
    b.AddTensor(LayerTensorName(l, "ffn_gate"), {8, 12});
    b.AddTensor(LayerTensorName(l, "ffn_down"), {12, 8});
    b.AddTensor(LayerTensorName(l, "ffn_up"), {8, 12});
  }
  return b;
}

// The same with two experts of hidden 12, one used per token.
GgufBuilder TinyMoeGguf() {
  GgufBuilder b = TinyGguf();
  b.SetU32("llama.expert_count", 2);
  b.SetU32("llama.expert_used_count", 1);
  for (int l = 0; l < 2; ++l) {
    for (const char* dense : {"ffn_gate", "ffn_down", "ffn_up"}) {
      b.RemoveTensor(LayerTensorName(l, dense));
    }
    b.AddTensor(LayerTensorName(l, "ffn_gate_inp"), {8, 2});
    b.AddTensor(LayerTensorName(l, "ffn_gate_exps"), {8, 12, 2});
    b.AddTensor(LayerTensorName(l, "ffn_up_exps"), {8, 12, 2});
    b.AddTensor(LayerTensorName(l, "ffn_down_exps"), {12, 8, 2});
  }
  return b;
}

struct Llama2cSpec {
  int version = 0;  // 0: legacy
  int32_t dim = 8, hidden_dim = 12, n_layers = 2, n_heads = 2, n_kv_heads = 1;
  int32_t vocab_size = 16, seq_len = 32;
  bool shared = true;
  int32_t group_size = 4;      // version 2
  uint8_t shared_byte = 0xff;  // versions 1 and 2: else from `shared`
};

// Writes a llama2.c checkpoint of the size its header implies (computed independently of
// the reader), filled with small floats or int8 values.
std::string BuildLlama2c(const Llama2cSpec& s) {
  std::string out;
  if (s.version > 0) out = Bytes<uint32_t>(0x616b3432) + Bytes<int32_t>(s.version);
  const int32_t vocab = s.version == 0 && !s.shared ? -s.vocab_size : s.vocab_size;
  for (int32_t v : {s.dim, s.hidden_dim, s.n_layers, s.n_heads, s.n_kv_heads, vocab, s.seq_len}) {
    out += Bytes(v);
  }
  if (s.version > 0) {
    out += Bytes<uint8_t>(s.shared_byte != 0xff ? s.shared_byte : s.shared);
    if (s.version == 2) out += Bytes(s.group_size);
    out.resize(256, '\0');
  }
  // In double: absurd headers would overflow 64-bit integers.
  const double dim = std::max(s.dim, 0), hidden = std::max(s.hidden_dim, 0);
  const double layers = std::max(s.n_layers, 0), v = std::max(s.vocab_size, 0);
  const double head = s.n_heads > 0 ? s.dim / s.n_heads : 0;  // integer division, as llama2.c
  const double kv_dim = std::max(s.n_kv_heads, 0) * head;
  // A matrix of n values: float32, or int8 values and one float32 scale per group.
  auto matrix = [&](double n) {
    return s.version == 2 && s.group_size > 0 ? n + std::floor(n / s.group_size) * 4 : n * 4;
  };
  double payload = (2 * layers * dim + dim) * 4;    // norms
  payload += matrix(v * dim) * (s.shared ? 1 : 2);  // embedding and classifier
  for (double n : {dim * dim, kv_dim * dim, kv_dim * dim, dim * dim, hidden * dim, hidden * dim,
                   hidden * dim}) {
    payload += layers * matrix(n);
  }
  if (s.version == 0) payload += 2 * std::max(s.seq_len, 0) * std::floor(head / 2) * 4;
  if (payload > (1 << 26)) return out;  // absurd header: header only
  for (int64_t i = 0; i < static_cast<int64_t>(payload); ++i)
    out.push_back(static_cast<char>(i % 7));
  return out;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::string SharedModel(const std::string& file) {
  return std::string(SHARDRUN_SHARED_DIR) + "/models/" + file;
}

// Parses a private heap copy of exactly `size` bytes, so that ASan sees any read past its end.
absl::StatusOr<std::unique_ptr<ModelFile>> ParseCopy(std::string_view name, const void* data,
                                                     size_t size) {
  std::vector<uint8_t> copy(static_cast<const uint8_t*>(data),
                            static_cast<const uint8_t*>(data) + size);
  return ModelFile::Parse(name, copy.empty() ? nullptr : copy.data(), copy.size());
}

absl::Status ParseStatus(const std::string& bytes, std::string_view name = kGgufName) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ParseCopy(name, bytes.data(), bytes.size());
  return model.status();
}

// The file must be refused with a message that starts with its name and names the problem.
void ExpectRejected(const std::string& bytes, std::string_view problem,
                    std::string_view name = kGgufName) {
  const absl::Status status = ParseStatus(bytes, name);
  ASSERT_FALSE(status.ok()) << "accepted; expected an error about: " << problem;
  EXPECT_THAT(std::string(status.message()), StartsWith(std::string(name) + ": "));
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(problem)));
}

void ExpectRejected(const GgufBuilder& b, std::string_view problem) {
  ExpectRejected(b.Build(), problem);
}

// ---------------------------------------------------------------------------------------
// The builders make valid models, so each test below fails for the reason it names.

TEST(BadModelTest, BuildersMakeValidModels) {
  for (const GgufBuilder& b : {TinyGguf(), TinyMoeGguf()}) {
    const std::string bytes = b.Build();
    absl::StatusOr<std::unique_ptr<ModelFile>> model =
        ParseCopy(kGgufName, bytes.data(), bytes.size());
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->config().dim, 8);
    EXPECT_EQ((*model)->config().kv_dim(), 4);
    EXPECT_EQ((*model)->vocabulary()->size(), 16);
  }
  for (int version : {0, 1, 2}) {
    for (bool shared : {true, false}) {
      Llama2cSpec spec;
      spec.version = version;
      spec.shared = shared;
      const std::string bytes = BuildLlama2c(spec);
      absl::StatusOr<std::unique_ptr<ModelFile>> model =
          ParseCopy(kBinName, bytes.data(), bytes.size());
      ASSERT_TRUE(model.ok()) << "version " << version << ": " << model.status();
      EXPECT_EQ((*model)->config().tied_output, shared);
      EXPECT_EQ((*model)->config().hidden_dim, 12);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Truncations of the real files: at every length through the headers, then at many lengths
// through the data. A GGUF file stays valid only while it holds all tensor data; a llama2.c
// file must have exactly the size its header implies.

void CheckTruncations(const std::string& file, size_t header_lengths, size_t stride) {
  const std::vector<uint8_t> bytes = ReadFile(SharedModel(file));
  ASSERT_FALSE(bytes.empty()) << file;
  absl::StatusOr<std::unique_ptr<ModelFile>> whole = ParseCopy(file, bytes.data(), bytes.size());
  ASSERT_TRUE(whole.ok()) << whole.status();
  uint64_t needed = 0;
  for (const TensorView& t : (*whole)->tensors()) {
    needed = std::max<uint64_t>(needed, t.file_offset + t.total_bytes());
  }
  if ((*whole)->format() != ModelFormat::kGguf) needed = bytes.size();

  std::vector<size_t> lengths;
  for (size_t n = 0; n < std::min(header_lengths, bytes.size()); ++n) lengths.push_back(n);
  for (size_t n = header_lengths; n < bytes.size(); n += stride) lengths.push_back(n);
  for (size_t back : {1, 2, 3, 4, 5, 8, 31, 32, 33}) {
    if (back <= bytes.size()) lengths.push_back(bytes.size() - back);
  }
  for (size_t n : lengths) {
    absl::StatusOr<std::unique_ptr<ModelFile>> model = ParseCopy(file, bytes.data(), n);
    if (n >= needed) {
      EXPECT_TRUE(model.ok()) << file << " cut to " << n << ": " << model.status();
      continue;
    }
    ASSERT_FALSE(model.ok()) << file << " cut to " << n << " bytes was accepted";
    const std::string message(model.status().message());
    ASSERT_THAT(message, StartsWith(file + ": ")) << n;
    ASSERT_THAT(message, ContainsRegex("truncated|past the end|empty")) << n;
  }
}

TEST(BadModelTest, TruncatedGguf) {
  // Their headers (metadata and tensor infos) end before byte 14200.
  CheckTruncations("stories260K.gguf", 14300, 4093);
  CheckTruncations("stories260K-q8_0.gguf", 14300, 4093);
}

TEST(BadModelTest, TruncatedMoeGguf) { CheckTruncations("moe-mini-q8_0.gguf", 24400, 40009); }

TEST(BadModelTest, TruncatedLlama2c) {
  CheckTruncations("stories260K.bin", 300, 1021);
  CheckTruncations("stories260K-v1.bin", 300, 1021);
  CheckTruncations("stories260K-v2-gs4.bin", 300, 1021);
}

TEST(BadModelTest, Llama2cWithExtraBytes) {
  for (const std::string file :
       {"stories260K.bin", "stories260K-v1.bin", "stories260K-v2-gs4.bin"}) {
    std::vector<uint8_t> bytes = ReadFile(SharedModel(file));
    bytes.resize(bytes.size() + 4, 0);
    absl::StatusOr<std::unique_ptr<ModelFile>> model = ParseCopy(file, bytes.data(), bytes.size());
    ASSERT_FALSE(model.ok()) << file;
    EXPECT_THAT(std::string(model.status().message()), HasSubstr("size mismatch")) << file;
    EXPECT_THAT(std::string(model.status().message()), HasSubstr("4 too many")) << file;
  }
}

TEST(BadModelTest, TruncatedLegacyMessageSaysWhatTheHeaderNeeds) {
  const std::vector<uint8_t> bytes = ReadFile(SharedModel("stories260K.bin"));
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ParseCopy("stories.bin", bytes.data(), 1000);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(),
            "stories.bin: truncated: header says dim 64, hidden_dim 172, 5 layers, 8 heads, 4 KV "
            "heads, vocab 512 (shared classifier), seq_len 512, which needs 1056540 bytes; the "
            "file has 1000 bytes");
}

// ---------------------------------------------------------------------------------------
// Every header byte of a tiny model set to a few values: anything may be refused, nothing
// may crash, and what is accepted must still be a consistent model.

TEST(BadModelTest, CorruptedHeaderBytesNeverCrash) {
  const GgufBuilder b = TinyMoeGguf();
  const std::string good = b.Build();
  int accepted = 0;
  for (size_t i = 0; i < b.HeaderBytes(); ++i) {
    for (uint8_t value : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
      std::string bad = good;
      bad[i] = static_cast<char>(value);
      absl::StatusOr<std::unique_ptr<ModelFile>> model =
          ParseCopy(kGgufName, bad.data(), bad.size());
      if (model.ok()) {
        ++accepted;
        EXPECT_TRUE(ValidateLlamaModel(**model).ok());
      } else {
        EXPECT_THAT(std::string(model.status().message()), StartsWith("tiny.gguf: "));
      }
    }
  }
  EXPECT_GT(accepted, 0);  // e.g. changed token text or scores
  for (int version : {0, 1, 2}) {
    Llama2cSpec spec;
    spec.version = version;
    const std::string good_bin = BuildLlama2c(spec);
    for (size_t i = 0; i < (version == 0 ? 28u : 41u); ++i) {
      for (uint8_t value : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
        std::string bad = good_bin;
        bad[i] = static_cast<char>(value);
        absl::StatusOr<std::unique_ptr<ModelFile>> model =
            ParseCopy(kBinName, bad.data(), bad.size());
        if (!model.ok()) {
          EXPECT_THAT(std::string(model.status().message()), StartsWith("tiny.bin: "));
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// GGUF header.

TEST(BadModelTest, GgufMagicAndVersion) {
  GgufBuilder b = TinyGguf();
  b.magic = "GGUX";  // no magic: read as a legacy llama2.c header, which makes no sense
  ExpectRejected(b, "starts with neither \"GGUF\" nor \"ak42\"");
  b = TinyGguf();
  b.version = 1;
  ExpectRejected(b, "GGUF version 1 is not supported");
  b.version = 4;
  ExpectRejected(b, "GGUF version 4 is not supported");
  b.version = 0x03000000;
  ExpectRejected(b, "big-endian");
  ExpectRejected(std::string("GG"), "truncated");
  ExpectRejected(std::string(""), "empty");
  b = TinyGguf();
  b.version = 2;  // version 2 has the same layout as 3
  EXPECT_TRUE(ParseStatus(b.Build()).ok());
}

TEST(BadModelTest, GgufHugeCounts) {
  GgufBuilder b = TinyGguf();
  b.tensor_count = uint64_t{1} << 62;
  ExpectRejected(b, "4611686018427387904 tensor infos cannot fit");
  b = TinyGguf();
  b.kv_count = uint64_t{1} << 62;
  ExpectRejected(b, "4611686018427387904 metadata entries cannot fit");
  b = TinyGguf();
  b.kv_count = ~uint64_t{0};
  ExpectRejected(b, "metadata entries cannot fit");
  b = TinyGguf();
  b.tensor_count = 40;  // more than there are: the table runs into the data
  EXPECT_FALSE(ParseStatus(b.Build()).ok());
  b = TinyGguf();
  b.tensor_count = 3;  // fewer: the model lacks its layers
  ExpectRejected(b, "missing tensor blk.0.attn_norm.weight");
}

TEST(BadModelTest, GgufHugeStringsAndArrays) {
  GgufBuilder b = TinyGguf();
  b.AddRawEntry(Bytes<uint64_t>(uint64_t{1} << 63));  // a key of 2^63 bytes
  ExpectRejected(b, "key has length 9223372036854775808");

  b = TinyGguf();
  b.AddRawEntry(Str("big.string") + Bytes<uint32_t>(kStr) + Bytes<uint64_t>(uint64_t{1} << 63));
  ExpectRejected(b, "string value has length 9223372036854775808");

  b = TinyGguf();
  b.AddRawEntry(Str("big.array") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(kF32) +
                Bytes<uint64_t>(uint64_t{1} << 62));
  ExpectRejected(b, "array of 4611686018427387904 float32 values");

  b = TinyGguf();
  b.AddRawEntry(Str("big.array") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(kF64) +
                Bytes<uint64_t>(~uint64_t{0}));
  ExpectRejected(b, "float64 values");

  b = TinyGguf();
  b.AddRawEntry(Str("strings") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(kStr) +
                Bytes<uint64_t>(uint64_t{1} << 61));
  ExpectRejected(b, "array of 2305843009213693952 strings");

  b = TinyGguf();
  b.AddRawEntry(Str("arrays") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(kArr) +
                Bytes<uint64_t>(uint64_t{1} << 60));
  ExpectRejected(b, "arrays, but only");

  b = TinyGguf();  // the second string of an array claims 2^63 bytes
  b.AddRawEntry(Str("strings") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(kStr) +
                Bytes<uint64_t>(2) + Str("ok") + Bytes<uint64_t>(uint64_t{1} << 63));
  ExpectRejected(b, "array string has length 9223372036854775808");
}

TEST(BadModelTest, GgufBadValueTypes) {
  GgufBuilder b = TinyGguf();
  b.AddRawEntry(Str("odd.type") + Bytes<uint32_t>(13) + Bytes<uint32_t>(0));
  ExpectRejected(b, "unknown value type 13");

  b = TinyGguf();
  b.AddRawEntry(Str("odd.array") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(99) +
                Bytes<uint64_t>(1));
  ExpectRejected(b, "array of unknown value type 99");

  b = TinyGguf();
  b.AddRawEntry(Str("odd.bool") + Bytes<uint32_t>(kBool) + Bytes<uint8_t>(2));
  ExpectRejected(b, "bool value is 2");

  // Arrays nested 100 deep, each holding one array: the reader must not recurse that far.
  std::string nested = Str("deep") + Bytes<uint32_t>(kArr);
  for (int i = 0; i < 100; ++i) nested += Bytes<uint32_t>(kArr) + Bytes<uint64_t>(1);
  nested += Bytes<uint32_t>(kU8) + Bytes<uint64_t>(0);
  b = TinyGguf();
  b.AddRawEntry(nested);
  ExpectRejected(b, "nested more than 8 deep");

  // Shallow nesting is legal and skipped.
  b = TinyGguf();
  b.AddRawEntry(Str("nested.ok") + Bytes<uint32_t>(kArr) + Bytes<uint32_t>(kArr) +
                Bytes<uint64_t>(2) + Bytes<uint32_t>(kI16) + Bytes<uint64_t>(1) +
                Bytes<int16_t>(-3) + Bytes<uint32_t>(kStr) + Bytes<uint64_t>(1) + Str("x"));
  EXPECT_TRUE(ParseStatus(b.Build()).ok()) << ParseStatus(b.Build());

  b = TinyGguf();
  b.AddRawEntry(Str("bad\x01key") + Bytes<uint32_t>(kU8) + Bytes<uint8_t>(0));
  ExpectRejected(b, "is not printable ASCII");

  b = TinyGguf();
  b.SetU32("general.name", 5);  // a string key of the wrong type
  ExpectRejected(b, "metadata general.name is uint32; expected a string");

  b = TinyGguf();
  b.SetString("llama.block_count", "2");
  ExpectRejected(b, "metadata llama.block_count is string; expected an integer");

  b = TinyGguf();
  b.SetString("llama.rope.freq_base", "1e4");
  ExpectRejected(b, "expected a float");

  b = TinyGguf();
  b.SetU32("tokenizer.ggml.add_bos_token", 1);
  ExpectRejected(b, "expected a bool");
}

TEST(BadModelTest, GgufDuplicates) {
  GgufBuilder b = TinyGguf();
  b.AddRawEntry(Str("llama.block_count") + Bytes<uint32_t>(kU32) + Bytes<uint32_t>(2));
  ExpectRejected(b, "duplicate metadata key llama.block_count");

  b = TinyGguf();
  b.AddTensor("blk.0.attn_q.weight", {8, 8});
  ExpectRejected(b, "duplicate tensor name blk.0.attn_q.weight");
}

// ---------------------------------------------------------------------------------------
// GGUF tensor infos and data layout.

TEST(BadModelTest, GgufTensorDimensions) {
  GgufBuilder b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {8, 8, 1, 1, 1};
  ExpectRejected(b, "has 5 dimensions; GGUF tensors have 1 to 4");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {};
  ExpectRejected(b, "has 0 dimensions");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {8, 0};
  ExpectRejected(b, "dimension 1 is 0; it must be positive");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {8, uint64_t{1} << 63};
  ExpectRejected(b, "dimension 1 is 9223372036854775808");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {uint64_t{1} << 40, uint64_t{1} << 40};
  ExpectRejected(b, "has more elements than fit in 64 bits");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {uint64_t{1} << 31, uint64_t{1} << 31};
  ExpectRejected(b, "has more bytes than fit in 64 bits");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").dims = {uint64_t{1} << 30, uint64_t{1} << 30};
  ExpectRejected(b, "extends past the end of the file");

  // 1-D norms may carry ggml's implicit trailing 1.
  b = TinyGguf();
  b.tensor("blk.0.attn_norm.weight").dims = {8, 1};
  EXPECT_TRUE(ParseStatus(b.Build()).ok());
}

TEST(BadModelTest, GgufTensorNames) {
  GgufBuilder b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").name_length = uint64_t{1} << 63;
  ExpectRejected(b, "name has length 9223372036854775808");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").name = "blk.0.attn_q\n.weight";
  ExpectRejected(b, "is not 1 to 256 printable ASCII characters");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").name = "";
  ExpectRejected(b, "tensor name \"\" is not");
}

TEST(BadModelTest, GgufUnsupportedTensorTypes) {
  GgufBuilder b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").type = 12;  // q4_k
  const absl::Status status = ParseStatus(b.Build());
  EXPECT_EQ(status.message(),
            "tiny.gguf: tensor blk.0.attn_q.weight has type q4_k, which shardrun does not "
            "support (supported: f32, f16, bf16, q8_0, q4_0)");
  b.tensor("blk.0.attn_q.weight").type = 1000;
  ExpectRejected(b, "has type id 1000, which shardrun does not support");
  b.tensor("blk.0.attn_q.weight").type = 3;
  ExpectRejected(b, "has type q4_1");
}

TEST(BadModelTest, GgufBlocksMustFillRows) {
  GgufBuilder b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").type = kGgmlTypeQ8_0;  // rows of 8, blocks of 32
  ExpectRejected(b, "has rows of 8 values, not a multiple of its block size 32");
  b.tensor("blk.0.attn_q.weight").type = kGgmlTypeQ4_0;
  ExpectRejected(b, "not a multiple of its block size 32");
  // Other types are fine where the shape allows them.
  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").type = kGgmlTypeBF16;
  b.tensor("blk.1.ffn_up.weight").type = kGgmlTypeF16;
  EXPECT_TRUE(ParseStatus(b.Build()).ok()) << ParseStatus(b.Build());
}

TEST(BadModelTest, GgufOffsets) {
  GgufBuilder b = TinyGguf();
  b.tensor("output.weight").offset = uint64_t{1} << 40;
  ExpectRejected(b, "tensor output.weight has offset 1099511627776, past the end of the file");

  b = TinyGguf();
  b.tensor("output.weight").offset = ~uint64_t{0} - 31;  // a multiple of 32 near 2^64
  ExpectRejected(b, "past the end of the file");

  b = TinyGguf();  // the last tensor's data runs past the end
  const std::string good = b.Build();
  ExpectRejected(good.substr(0, good.size() - 4), "tensor blk.1.ffn_up.weight (384 bytes");

  b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").offset = 4;
  ExpectRejected(b, "has offset 4, which is not a multiple of the alignment 32");

  b = TinyGguf();  // two tensors on the same bytes
  b.tensor("blk.1.attn_q.weight").offset = 0;
  ExpectRejected(b, "overlap");

  b = TinyGguf();  // partly overlapping
  b.tensor("blk.0.ffn_gate.weight").offset = 32;
  ExpectRejected(b, "overlap");
}

TEST(BadModelTest, GgufAlignment) {
  GgufBuilder b = TinyGguf();
  b.SetU32("general.alignment", 0);
  ExpectRejected(b, "general.alignment is 0; it must be a power of two");
  b.SetU32("general.alignment", 48);
  ExpectRejected(b, "general.alignment is 48");
  b.SetString("general.alignment", "32");
  ExpectRejected(b, "general.alignment is 32; it must be a power of two");

  b = TinyGguf();  // a legal, larger alignment
  b.SetU32("general.alignment", 256);
  b.alignment = 256;
  EXPECT_TRUE(ParseStatus(b.Build()).ok()) << ParseStatus(b.Build());

  // Alignment 1 allows any offset; a float tensor at an address that is not a multiple of 4
  // must still be refused.
  b = TinyGguf();
  b.SetU32("general.alignment", 1);
  b.alignment = 1;
  b.tensor("token_embd.weight").gap = (4 - b.HeaderBytes() % 4) % 4;
  EXPECT_TRUE(ParseStatus(b.Build()).ok()) << ParseStatus(b.Build());
  b.tensor("token_embd.weight").gap = (1 + 4 - b.HeaderBytes() % 4) % 4;
  ExpectRejected(b, "tensor token_embd.weight data at offset");
  ExpectRejected(b, "is misaligned: f32 data must be aligned to 4 bytes");

  // A well-formed file at a misaligned address (the mapping base is page aligned, but Parse
  // takes any memory): refused, not read through a misaligned pointer.
  const std::string good = TinyGguf().Build();
  std::vector<uint8_t> shifted(good.size() + 1);
  std::memcpy(shifted.data() + 1, good.data(), good.size());
  absl::StatusOr<std::unique_ptr<ModelFile>> model =
      ModelFile::Parse(kGgufName, shifted.data() + 1, good.size());
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("misaligned"));
}

// ---------------------------------------------------------------------------------------
// GGUF hyperparameters and shapes.

TEST(BadModelTest, GgufArchitecture) {
  GgufBuilder b = TinyGguf();
  b.SetString("general.architecture", "gpt2");
  ExpectRejected(b, "architecture is \"gpt2\"; shardrun runs only llama");
  b.Remove("general.architecture");
  ExpectRejected(b, "missing metadata key general.architecture");
}

TEST(BadModelTest, GgufHyperparameters) {
  struct Case {
    std::string key;
    int64_t value;
    std::string problem;
  };
  for (const Case& c : std::vector<Case>{
           {"llama.embedding_length", 0, "dim (embedding length) is 0"},
           {"llama.embedding_length", -8, "dim (embedding length) is -8"},
           {"llama.embedding_length", 1 << 20, "dim (embedding length) is 1048576"},
           {"llama.feed_forward_length", -5, "hidden_dim (feed-forward length) is -5"},
           {"llama.block_count", 0, "n_layers (block count) is 0"},
           {"llama.attention.head_count", 0, "n_heads (attention head count) is 0"},
           {"llama.attention.head_count", 3, "dim 8 is not a multiple of n_heads 3"},
           {"llama.attention.head_count", 8, "head size 1"},
           {"llama.attention.head_count_kv", 0, "n_kv_heads (attention KV head count) is 0"},
           {"llama.attention.head_count_kv", 4, "n_kv_heads (attention KV head count) is 4"},
           {"llama.context_length", 0, "context_length is 0"},
           {"llama.vocab_size", 0, "vocab_size is 0"},
           {"llama.vocab_size", 17, "tokenizer.ggml.tokens has 16 tokens"},
           {"llama.rope.dimension_count", 2, "llama.rope.dimension_count is 2"},
           {"llama.expert_used_count", 1, "n_experts_used is 1 but the model has no experts"},
           {"llama.expert_count", -1, "n_experts (expert count) is -1"},
       }) {
    GgufBuilder b = TinyGguf();
    b.SetI32(c.key, static_cast<int32_t>(c.value));
    SCOPED_TRACE(c.key);
    ExpectRejected(b, c.problem);
  }
  GgufBuilder b = TinyGguf();
  b.SetU64("llama.context_length", uint64_t{1} << 40);
  ExpectRejected(b, "metadata llama.context_length = 1099511627776 is out of range");
  b.SetU64("llama.context_length", ~uint64_t{0});
  ExpectRejected(b, "llama.context_length = 18446744073709551615 is out of range");
  b = TinyGguf();
  b.SetF32("llama.attention.layer_norm_rms_epsilon", -1.0f);
  ExpectRejected(b, "rms_norm_eps is -1");
  b.SetF32("llama.attention.layer_norm_rms_epsilon", NAN);
  ExpectRejected(b, "rms_norm_eps is nan");
  b = TinyGguf();
  b.SetF32("llama.rope.freq_base", 0.0f);
  ExpectRejected(b, "rope_freq_base is 0");
  for (const char* key :
       {"llama.embedding_length", "llama.feed_forward_length", "llama.block_count",
        "llama.attention.head_count", "llama.context_length"}) {
    b = TinyGguf();
    b.Remove(key);
    ExpectRejected(b, std::string("missing metadata key ") + key);
  }
  // Defaults: no head_count_kv means one KV head per head.
  b = TinyGguf();
  b.Remove("llama.attention.head_count_kv");
  ExpectRejected(b,
                 "tensor blk.0.attn_k.weight has shape {8, 4}; the hyperparameters "
                 "(dim 8, hidden_dim 12, kv_dim 8, vocab 16) need {8, 8}");
}

TEST(BadModelTest, GgufShapes) {
  GgufBuilder b = TinyGguf();
  b.tensor("blk.1.attn_k.weight").dims = {8, 8};
  ExpectRejected(b, "tensor blk.1.attn_k.weight has shape {8, 8}");
  b = TinyGguf();
  b.tensor("blk.0.ffn_down.weight").dims = {8, 12};  // transposed
  ExpectRejected(b, "tensor blk.0.ffn_down.weight has shape {8, 12}");
  b = TinyGguf();
  b.tensor("token_embd.weight").dims = {8, 15};
  ExpectRejected(b, "tensor token_embd.weight has shape {8, 15}");
  b = TinyGguf();
  b.tensor("output.weight").dims = {16, 8};
  ExpectRejected(b, "tensor output.weight has shape {16, 8}");
  b = TinyGguf();
  b.tensor("blk.0.attn_norm.weight").dims = {9};
  ExpectRejected(b, "blk.0.attn_norm.weight has shape {9}");
  b = TinyGguf();
  b.RemoveTensor("blk.1.ffn_up.weight");
  ExpectRejected(b, "missing tensor blk.1.ffn_up.weight");
  b = TinyGguf();
  b.RemoveTensor("output_norm.weight");
  ExpectRejected(b, "missing tensor output_norm.weight");
  b = TinyGguf();
  b.AddTensor("blk.2.attn_q.weight", {8, 8});
  ExpectRejected(b, "tensor blk.2.attn_q.weight belongs to layer 2, but the model has 2 layers");
  b = TinyGguf();
  b.tensor("blk.0.ffn_norm.weight").type = kGgmlTypeF16;
  ExpectRejected(b, "tensor blk.0.ffn_norm.weight is f16; norm weights must be f32");
  // No output.weight: the classifier is the embedding.
  b = TinyGguf();
  b.RemoveTensor("output.weight");
  const std::string tied = b.Build();
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ParseCopy(kGgufName, tied.data(), tied.size());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE((*model)->config().tied_output);
}

TEST(BadModelTest, GgufMoe) {
  GgufBuilder b = TinyMoeGguf();
  b.SetU32("llama.expert_used_count", 3);
  ExpectRejected(b, "n_experts_used (experts per token) is 3; it must be in [1, 2]");
  b = TinyMoeGguf();
  b.SetU32("llama.expert_used_count", 0);
  ExpectRejected(b, "n_experts_used (experts per token) is 0");
  b = TinyMoeGguf();
  b.tensor("blk.1.ffn_gate_exps.weight").dims = {8, 12, 3};
  ExpectRejected(b, "tensor blk.1.ffn_gate_exps.weight has shape {8, 12, 3}");
  b = TinyMoeGguf();
  b.tensor("blk.0.ffn_down_exps.weight").dims = {8, 12, 2};
  ExpectRejected(b, "tensor blk.0.ffn_down_exps.weight has shape {8, 12, 2}");
  b = TinyMoeGguf();
  b.tensor("blk.0.ffn_gate_inp.weight").dims = {8, 3};
  ExpectRejected(b, "tensor blk.0.ffn_gate_inp.weight has shape {8, 3}");
  b = TinyMoeGguf();
  b.RemoveTensor("blk.1.ffn_up_exps.weight");
  ExpectRejected(b, "missing tensor blk.1.ffn_up_exps.weight");
  b = TinyMoeGguf();  // expert tensors in a model that declares no experts
  b.Remove("llama.expert_count");
  b.Remove("llama.expert_used_count");
  b.AddTensor("blk.0.ffn_gate.weight", {8, 12});
  b.AddTensor("blk.0.ffn_down.weight", {12, 8});
  b.AddTensor("blk.0.ffn_up.weight", {8, 12});
  ExpectRejected(b, "has expert tensor blk.0.ffn_gate_inp.weight");
}

TEST(BadModelTest, GgufVocabulary) {
  GgufBuilder b = TinyGguf();
  b.SetString("tokenizer.ggml.model", "gpt2");
  ExpectRejected(b, "tokenizer \"gpt2\" is not supported");
  b = TinyGguf();
  b.Remove("tokenizer.ggml.tokens");
  b.SetU32("llama.vocab_size", 16);
  ExpectRejected(b, "missing metadata key tokenizer.ggml.tokens");
  b = TinyGguf();
  b.SetArray<int32_t>("tokenizer.ggml.tokens", kI32, {1, 2, 3});
  ExpectRejected(b,
                 "metadata tokenizer.ggml.tokens is an array of int32; expected an array of "
                 "strings");
  b = TinyGguf();
  b.SetArray<float>("tokenizer.ggml.scores", kF32, {0, 1});
  ExpectRejected(b, "tokenizer.ggml.scores has 2 values for 16 tokens");
  b = TinyGguf();
  b.SetArray<int32_t>("tokenizer.ggml.token_type", kI32, std::vector<int32_t>(16, 9));
  ExpectRejected(b, "token 0 has unknown token type 9");
  b = TinyGguf();
  b.SetArray<int32_t>("tokenizer.ggml.token_type", kI32, std::vector<int32_t>(15, 1));
  ExpectRejected(b, "tokenizer.ggml.token_type has 15 values for 16 tokens");
  b = TinyGguf();
  b.SetU32("tokenizer.ggml.bos_token_id", 99);
  ExpectRejected(b, "the bos token id 99 is outside the vocabulary of 16 tokens");
  b = TinyGguf();
  b.SetI32("tokenizer.ggml.eos_token_id", -1);
  ExpectRejected(b, "the eos token id -1 is outside");
  b = TinyGguf();
  b.SetU32("llama.vocab_size", 16);
  std::vector<std::string> tokens(15, "x");
  b.SetStrings("tokenizer.ggml.tokens", tokens);
  ExpectRejected(b, "tokenizer.ggml.tokens has 15 tokens but the model has a vocabulary of 16");
  // Without a tokenizer the vocabulary size comes from the embedding.
  b = TinyGguf();
  for (const char* key : {"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                          "tokenizer.ggml.token_type"}) {
    b.Remove(key);
  }
  const std::string bytes = b.Build();
  absl::StatusOr<std::unique_ptr<ModelFile>> model =
      ParseCopy(kGgufName, bytes.data(), bytes.size());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().vocab_size, 16);
  EXPECT_FALSE((*model)->vocabulary().has_value());
}

// ---------------------------------------------------------------------------------------
// llama2.c headers.

TEST(BadModelTest, Llama2cHyperparameters) {
  struct Case {
    int32_t Llama2cSpec::*field;
    int32_t value;
    std::string problem;
  };
  for (int version : {0, 1, 2}) {
    for (const Case& c : std::vector<Case>{
             {&Llama2cSpec::dim, 0, "dim (embedding length) is 0"},
             {&Llama2cSpec::dim, -8, "dim (embedding length) is -8"},
             {&Llama2cSpec::dim, 1 << 30, "dim (embedding length) is 1073741824"},
             {&Llama2cSpec::hidden_dim, 0, "hidden_dim (feed-forward length) is 0"},
             {&Llama2cSpec::n_layers, 0, "n_layers (block count) is 0"},
             {&Llama2cSpec::n_layers, -1, "n_layers (block count) is -1"},
             {&Llama2cSpec::n_layers, 1 << 20, "n_layers (block count) is 1048576"},
             {&Llama2cSpec::n_heads, 0, "n_heads (attention head count) is 0"},
             {&Llama2cSpec::n_heads, 3, "dim 8 is not a multiple of n_heads 3"},
             {&Llama2cSpec::n_heads, 8, "head size 1"},
             {&Llama2cSpec::n_kv_heads, 0, "n_kv_heads (attention KV head count) is 0"},
             {&Llama2cSpec::n_kv_heads, 3, "n_kv_heads (attention KV head count) is 3"},
             {&Llama2cSpec::seq_len, 0, "context_length is 0"},
             {&Llama2cSpec::seq_len, -32, "context_length is -32"},
             {&Llama2cSpec::vocab_size, 0, "vocab_size is 0"},
         }) {
      Llama2cSpec spec;
      spec.version = version;
      spec.*c.field = c.value;
      SCOPED_TRACE(::testing::Message() << "version " << version << ": " << c.problem);
      ExpectRejected(BuildLlama2c(spec), c.problem, kBinName);
    }
  }
  Llama2cSpec spec;
  spec.dim = 16;
  spec.n_heads = 4;
  spec.n_kv_heads = 3;
  ExpectRejected(BuildLlama2c(spec), "n_heads 4 is not a multiple of n_kv_heads 3", kBinName);

  // Legacy: a negative vocab_size means "unshared classifier"; INT_MIN has no positive.
  spec = Llama2cSpec{};
  spec.vocab_size = INT32_MIN;
  ExpectRejected(BuildLlama2c(spec), "vocab_size -2147483648 is out of range", kBinName);
  // Versions 1 and 2 use the shared_classifier byte instead.
  spec = Llama2cSpec{};
  spec.version = 1;
  spec.vocab_size = -16;
  ExpectRejected(BuildLlama2c(spec), "vocab_size is -16", kBinName);
  spec.vocab_size = 16;
  spec.shared_byte = 2;
  ExpectRejected(BuildLlama2c(spec), "shared_classifier is 2, not 0 or 1", kBinName);
  // The legacy header's problems are reported as such, since anything without a magic is
  // read as one.
  ExpectRejected(std::string(28, '\xff'),
                 "legacy llama2.c header (the file starts with neither \"GGUF\" nor \"ak42\"): "
                 "dim (embedding length) is -1",
                 kBinName);
  ExpectRejected(std::string(27, '\x01'), "too few for a llama2.c header", kBinName);
}

TEST(BadModelTest, Llama2cVersionsAndGroups) {
  Llama2cSpec spec;
  spec.version = 3;
  ExpectRejected(BuildLlama2c(spec), "llama2.c export version 3 is not supported", kBinName);
  std::string v1 = BuildLlama2c(Llama2cSpec{.version = 1});
  const int32_t negative = -1;
  std::memcpy(&v1[4], &negative, 4);
  ExpectRejected(v1, "llama2.c export version -1 is not supported", kBinName);
  ExpectRejected(std::string("24ka"), "truncated: 4 bytes of a 256-byte llama2.c header", kBinName);
  std::string v1_header = BuildLlama2c(Llama2cSpec{.version = 1}).substr(0, 255);
  ExpectRejected(v1_header, "truncated: 255 bytes of a 256-byte llama2.c version 1 header",
                 kBinName);

  spec = Llama2cSpec{};
  spec.version = 2;
  spec.group_size = 0;
  ExpectRejected(BuildLlama2c(spec), "group size 0 must be positive", kBinName);
  spec.group_size = -4;
  ExpectRejected(BuildLlama2c(spec), "group size -4 must be positive", kBinName);
  spec.group_size = 16;  // larger than dim 8
  ExpectRejected(BuildLlama2c(spec), "group size 16 does not divide dim 8", kBinName);
  spec.group_size = 8;  // divides dim 8, not hidden_dim 12
  ExpectRejected(BuildLlama2c(spec), "group size 8 does not divide hidden_dim 12", kBinName);
  spec.group_size = 2;
  EXPECT_TRUE(ParseStatus(BuildLlama2c(spec), kBinName).ok());

  // Scales that follow an odd number of int8 values would be misaligned floats.
  spec = Llama2cSpec{.version = 2,
                     .dim = 2,
                     .hidden_dim = 2,
                     .n_layers = 1,
                     .n_heads = 1,
                     .n_kv_heads = 1,
                     .vocab_size = 1,
                     .seq_len = 4,
                     .group_size = 2};
  ExpectRejected(BuildLlama2c(spec),
                 "scales of tensor token_embd.weight at offset 282 are "
                 "misaligned",
                 kBinName);
}

TEST(BadModelTest, Llama2cSizes) {
  for (int version : {0, 1, 2}) {
    Llama2cSpec spec;
    spec.version = version;
    spec.shared = false;
    std::string bytes = BuildLlama2c(spec);
    ExpectRejected(bytes.substr(0, bytes.size() - 1), "truncated: header says dim 8", kBinName);
    ExpectRejected(bytes + "x", "size mismatch: header says dim 8", kBinName);
    ExpectRejected(bytes + "x", "(own classifier)", kBinName);
    // Marked shared, the unshared file's classifier is bytes too many.
    std::string relabeled = bytes;
    if (version == 0) {
      const int32_t vocab = 16;
      std::memcpy(&relabeled[20], &vocab, 4);
    } else {
      relabeled[36] = 1;
    }
    ExpectRejected(relabeled, "(shared classifier), seq_len 32", kBinName);
    // The classifier: 16 x 8 floats, or int8 values and a scale per 4 of them.
    ExpectRejected(relabeled, version == 2 ? "(256 too many)" : "(512 too many)", kBinName);
  }
}

// ---------------------------------------------------------------------------------------
// Files that cannot be opened.

TEST(BadModelTest, OpenErrors) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open("/nonexistent/model.gguf");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("/nonexistent/model.gguf"));

  model = ModelFile::Open(std::filesystem::temp_directory_path().string());
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("not a regular file"));

  const std::string dir = ::testing::TempDir();
  const std::string empty = dir + "/bad_model_test_empty.gguf";
  { std::ofstream(empty, std::ios::binary); }
  model = ModelFile::Open(empty);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("empty"));

  // A broken file on disk, through the mapping.
  const std::string broken = dir + "/bad_model_test_broken.gguf";
  GgufBuilder b = TinyGguf();
  b.tensor("blk.0.attn_q.weight").type = 12;
  const std::string bytes = b.Build();
  std::ofstream(broken, std::ios::binary).write(bytes.data(), bytes.size());
  model = ModelFile::Open(broken);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(),
            broken +
                ": tensor blk.0.attn_q.weight has type q4_k, which shardrun does not "
                "support (supported: f32, f16, bf16, q8_0, q4_0)");
  // And a good one.
  const std::string good = TinyGguf().Build();
  std::ofstream(broken, std::ios::binary | std::ios::trunc).write(good.data(), good.size());
  model = ModelFile::Open(broken);
  ASSERT_TRUE(model.ok()) << model.status();
  std::remove(empty.c_str());
  std::remove(broken.c_str());
}

}  // namespace
}  // namespace shardrun
