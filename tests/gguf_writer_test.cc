// GgufWriter: every metadata type, tensor layout and alignment, streaming and failure paths.
// Files are decoded here by a small independent GGUF parser (so a bug shared with
// model/gguf_reader.cc cannot hide) and also opened with ModelFile::Open.
#include "model/gguf_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/quantize.h"
#include "kernels/tensor_type.h"
#include "model/gguf_format.h"
#include "model/model_file.h"
#include "model/synth_model.h"
#include "tests/test_util.h"

namespace shardrun {
namespace {

using gguf::ValueType;

// ---- An independent GGUF decoder -------------------------------------------------------

// Elements of a metadata value as raw little-endian bytes (strings as their characters), so
// that expected values of any type compare exactly (NaN bits and -0.0 included).
struct Decoded {
  uint32_t type = 0;
  uint32_t element_type = 0;  // arrays only
  std::vector<std::string> elements;
};

struct DecodedTensor {
  std::string name;
  std::vector<uint64_t> shape;
  uint32_t ggml_type;
  uint64_t offset;
};

struct DecodedFile {
  std::string bytes;
  uint32_t version = 0;
  std::vector<std::pair<std::string, Decoded>> metadata;
  std::vector<DecodedTensor> tensors;
  uint64_t header_end = 0;
  uint64_t data_start = 0;

  const Decoded* Find(const std::string& key) const {
    for (const auto& [k, v] : metadata) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  std::string TensorBytes(const DecodedTensor& t, size_t n) const {
    return bytes.substr(data_start + t.offset, n);
  }
};

class Decoder {
 public:
  explicit Decoder(const std::string& bytes) : bytes_(bytes) {}

  template <typename T>
  T Read() {
    T v;
    Need(sizeof(T));
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string Raw(size_t n) {
    Need(n);
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::string String() { return Raw(Read<uint64_t>()); }
  std::string Element(uint32_t type) {
    switch (static_cast<ValueType>(type)) {
      case ValueType::kUint8:
      case ValueType::kInt8:
      case ValueType::kBool:
        return Raw(1);
      case ValueType::kUint16:
      case ValueType::kInt16:
        return Raw(2);
      case ValueType::kUint32:
      case ValueType::kInt32:
      case ValueType::kFloat32:
        return Raw(4);
      case ValueType::kUint64:
      case ValueType::kInt64:
      case ValueType::kFloat64:
        return Raw(8);
      case ValueType::kString:
        return String();
      case ValueType::kArray:
        break;
    }
    throw std::runtime_error("bad element type " + std::to_string(type));
  }
  Decoded Value(uint32_t type) {
    Decoded d;
    d.type = type;
    if (type == static_cast<uint32_t>(ValueType::kArray)) {
      d.element_type = Read<uint32_t>();
      const uint64_t n = Read<uint64_t>();
      for (uint64_t i = 0; i < n; ++i) d.elements.push_back(Element(d.element_type));
    } else {
      d.elements.push_back(Element(type));
    }
    return d;
  }
  size_t pos() const { return pos_; }

 private:
  void Need(size_t n) {
    if (pos_ + n > bytes_.size()) throw std::runtime_error("truncated GGUF");
  }
  const std::string& bytes_;
  size_t pos_ = 0;
};

DecodedFile Decode(const std::string& path) {
  DecodedFile f;
  f.bytes = testing::ReadFile(path);
  Decoder d(f.bytes);
  EXPECT_EQ(d.Read<uint32_t>(), gguf::kMagic);
  f.version = d.Read<uint32_t>();
  const uint64_t n_tensors = d.Read<uint64_t>();
  const uint64_t n_kv = d.Read<uint64_t>();
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = d.String();
    const uint32_t type = d.Read<uint32_t>();
    f.metadata.emplace_back(std::move(key), d.Value(type));
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    DecodedTensor t;
    t.name = d.String();
    const uint32_t dims = d.Read<uint32_t>();
    for (uint32_t j = 0; j < dims; ++j) t.shape.push_back(d.Read<uint64_t>());
    t.ggml_type = d.Read<uint32_t>();
    t.offset = d.Read<uint64_t>();
    f.tensors.push_back(std::move(t));
  }
  f.header_end = d.pos();
  uint64_t alignment = gguf::kDefaultAlignment;
  if (const Decoded* a = f.Find("general.alignment")) {
    uint32_t v;
    std::memcpy(&v, a->elements.at(0).data(), 4);
    alignment = v;
  }
  f.data_start = (f.header_end + alignment - 1) / alignment * alignment;
  return f;
}

template <typename T>
std::string RawOf(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

template <typename T>
std::vector<std::string> RawsOf(const std::vector<T>& values) {
  std::vector<std::string> out;
  for (const T& v : values) out.push_back(RawOf(v));
  return out;
}

constexpr uint32_t Type(ValueType t) { return static_cast<uint32_t>(t); }

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

std::vector<uint8_t> Pattern(size_t n, uint8_t salt) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 131 + salt);
  return v;
}

// ---- Metadata ----------------------------------------------------------------------------

TEST(GgufWriterTest, EveryMetadataTypeRoundTrips) {
  GgufWriter w;
  w.SetUint8("u8", 200);
  w.SetInt8("i8", -128);
  w.SetUint16("u16", 65535);
  w.SetInt16("i16", -32768);
  w.SetUint32("u32", 4000000000u);
  w.SetInt32("i32", std::numeric_limits<int32_t>::min());
  w.SetUint64("u64", std::numeric_limits<uint64_t>::max());
  w.SetInt64("i64", std::numeric_limits<int64_t>::min());
  w.SetFloat32("f32", -0.0f);
  w.SetFloat64("f64", 3.141592653589793);
  w.SetBool("yes", true);
  w.SetBool("no", false);
  const std::string with_nul("a\0b\xe2\x96\x81", 6);
  w.SetString("str", with_nul);
  w.SetString("empty", "");
  const std::vector<uint8_t> au8 = {0, 1, 255};
  const std::vector<int8_t> ai8 = {-1, 127};
  const std::vector<uint16_t> au16 = {7, 65000};
  const std::vector<int16_t> ai16 = {-300};
  const std::vector<uint32_t> au32 = {1, 2, 3, 4};
  const std::vector<int32_t> ai32 = {-5, 6};
  const std::vector<uint64_t> au64 = {uint64_t{1} << 63};
  const std::vector<int64_t> ai64 = {-1, 0, 1};
  const std::vector<float> af32 = {1.5f, std::numeric_limits<float>::quiet_NaN(),
                                   -std::numeric_limits<float>::infinity()};
  const std::vector<double> af64 = {1e300, -2.5};
  const std::vector<bool> abool = {true, false, true};
  const std::vector<std::string> astr = {"<unk>", "", "\xe2\x96\x81the"};
  w.SetArray("a.u8", au8);
  w.SetArray("a.i8", ai8);
  w.SetArray("a.u16", au16);
  w.SetArray("a.i16", ai16);
  w.SetArray("a.u32", au32);
  w.SetArray("a.i32", ai32);
  w.SetArray("a.u64", au64);
  w.SetArray("a.i64", ai64);
  w.SetArray("a.f32", af32);
  w.SetArray("a.f64", af64);
  w.SetArray("a.bool", abool);
  w.SetArray("a.str", astr);
  w.SetArray("a.empty", std::vector<float>{});
  const std::string path = TempPath("types.gguf");
  ASSERT_TRUE(w.Write(path).ok());

  const DecodedFile f = Decode(path);
  EXPECT_EQ(f.version, 3u);
  EXPECT_TRUE(f.tensors.empty());
  struct Expected {
    std::string key;
    uint32_t type;
    uint32_t element_type;
    std::vector<std::string> elements;
  };
  const std::vector<Expected> expected = {
      {"u8", Type(ValueType::kUint8), 0, {RawOf<uint8_t>(200)}},
      {"i8", Type(ValueType::kInt8), 0, {RawOf<int8_t>(-128)}},
      {"u16", Type(ValueType::kUint16), 0, {RawOf<uint16_t>(65535)}},
      {"i16", Type(ValueType::kInt16), 0, {RawOf<int16_t>(-32768)}},
      {"u32", Type(ValueType::kUint32), 0, {RawOf<uint32_t>(4000000000u)}},
      {"i32", Type(ValueType::kInt32), 0, {RawOf(std::numeric_limits<int32_t>::min())}},
      {"u64", Type(ValueType::kUint64), 0, {RawOf(std::numeric_limits<uint64_t>::max())}},
      {"i64", Type(ValueType::kInt64), 0, {RawOf(std::numeric_limits<int64_t>::min())}},
      {"f32", Type(ValueType::kFloat32), 0, {RawOf(-0.0f)}},
      {"f64", Type(ValueType::kFloat64), 0, {RawOf(3.141592653589793)}},
      {"yes", Type(ValueType::kBool), 0, {std::string(1, '\1')}},
      {"no", Type(ValueType::kBool), 0, {std::string(1, '\0')}},
      {"str", Type(ValueType::kString), 0, {with_nul}},
      {"empty", Type(ValueType::kString), 0, {""}},
      {"a.u8", Type(ValueType::kArray), Type(ValueType::kUint8), RawsOf(au8)},
      {"a.i8", Type(ValueType::kArray), Type(ValueType::kInt8), RawsOf(ai8)},
      {"a.u16", Type(ValueType::kArray), Type(ValueType::kUint16), RawsOf(au16)},
      {"a.i16", Type(ValueType::kArray), Type(ValueType::kInt16), RawsOf(ai16)},
      {"a.u32", Type(ValueType::kArray), Type(ValueType::kUint32), RawsOf(au32)},
      {"a.i32", Type(ValueType::kArray), Type(ValueType::kInt32), RawsOf(ai32)},
      {"a.u64", Type(ValueType::kArray), Type(ValueType::kUint64), RawsOf(au64)},
      {"a.i64", Type(ValueType::kArray), Type(ValueType::kInt64), RawsOf(ai64)},
      {"a.f32", Type(ValueType::kArray), Type(ValueType::kFloat32), RawsOf(af32)},
      {"a.f64", Type(ValueType::kArray), Type(ValueType::kFloat64), RawsOf(af64)},
      {"a.bool",
       Type(ValueType::kArray),
       Type(ValueType::kBool),
       {std::string(1, '\1'), std::string(1, '\0'), std::string(1, '\1')}},
      {"a.str", Type(ValueType::kArray), Type(ValueType::kString), astr},
      {"a.empty", Type(ValueType::kArray), Type(ValueType::kFloat32), {}},
  };
  ASSERT_EQ(f.metadata.size(), expected.size());  // no general.alignment at the default
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].key);
    EXPECT_EQ(f.metadata[i].first, expected[i].key);  // insertion order
    EXPECT_EQ(f.metadata[i].second.type, expected[i].type);
    EXPECT_EQ(f.metadata[i].second.element_type, expected[i].element_type);
    EXPECT_EQ(f.metadata[i].second.elements, expected[i].elements);
  }
  EXPECT_EQ(f.bytes.size() % 32, 0u);
  EXPECT_EQ(w.FileSize(), f.bytes.size());
}

TEST(GgufWriterTest, SettingAKeyAgainReplacesItInPlace) {
  GgufWriter w;
  w.SetUint32("first", 1);
  w.SetString("second", "x");
  w.SetFloat32("first", 2.5f);  // a new type too
  const std::string path = TempPath("replace.gguf");
  ASSERT_TRUE(w.Write(path).ok());
  const DecodedFile f = Decode(path);
  ASSERT_EQ(f.metadata.size(), 2u);
  EXPECT_EQ(f.metadata[0].first, "first");
  EXPECT_EQ(f.metadata[0].second.type, Type(ValueType::kFloat32));
  EXPECT_EQ(f.metadata[0].second.elements, std::vector<std::string>{RawOf(2.5f)});
  EXPECT_EQ(f.metadata[1].first, "second");
}

// ---- Tensors and alignment ---------------------------------------------------------------

struct TensorCase {
  std::string name;
  TensorType type;
  std::vector<int64_t> shape;
};

const std::vector<TensorCase>& MixedTensors() {
  static const auto* cases = new std::vector<TensorCase>{
      {"a", TensorType::kF32, {3}},             // 12 bytes: the next one needs padding
      {"b", TensorType::kF16, {5, 3}},          // 30
      {"c", TensorType::kQ8_0, {64, 3}},        // 6 blocks of 34
      {"d", TensorType::kQ4_0, {32, 1, 1, 2}},  // 4 dimensions, 2 blocks of 18
      {"e", TensorType::kBF16, {7}},            // 14
  };
  return *cases;
}

void CheckMixedTensors(uint32_t alignment) {
  SCOPED_TRACE(alignment);
  GgufWriter w(alignment);
  w.SetString("general.architecture", "test");
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < MixedTensors().size(); ++i) {
    const TensorCase& c = MixedTensors()[i];
    int64_t n = 1;
    for (int64_t d : c.shape) n *= d;
    data.push_back(Pattern(TensorBytes(c.type, n), static_cast<uint8_t>(i)));
    ASSERT_TRUE(w.AddTensor(c.name, c.type, c.shape, data.back()).ok());
  }
  const std::string path = TempPath("mixed" + std::to_string(alignment) + ".gguf");
  ASSERT_TRUE(w.Write(path).ok());

  const DecodedFile f = Decode(path);
  const Decoded* a = f.Find("general.alignment");
  if (alignment == gguf::kDefaultAlignment) {
    EXPECT_EQ(a, nullptr);
  } else {
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->type, Type(ValueType::kUint32));  // ggml reads it as uint32 only
    EXPECT_EQ(a->elements, std::vector<std::string>{RawOf<uint32_t>(alignment)});
  }
  EXPECT_EQ(f.data_start % alignment, 0u);
  // Header padding and tensor padding are zeros.
  EXPECT_EQ(f.bytes.substr(f.header_end, f.data_start - f.header_end),
            std::string(f.data_start - f.header_end, '\0'));
  ASSERT_EQ(f.tensors.size(), MixedTensors().size());
  uint64_t expected_offset = 0;
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const DecodedTensor& t = f.tensors[i];
    const TensorCase& c = MixedTensors()[i];
    SCOPED_TRACE(c.name);
    EXPECT_EQ(t.name, c.name);
    EXPECT_EQ(t.ggml_type, GgmlTypeOf(c.type));
    EXPECT_EQ(t.shape, std::vector<uint64_t>(c.shape.begin(), c.shape.end()));
    EXPECT_EQ(t.offset, expected_offset);  // packed as tightly as alignment allows
    EXPECT_EQ(t.offset % alignment, 0u);
    EXPECT_EQ(f.TensorBytes(t, data[i].size()), std::string(data[i].begin(), data[i].end()));
    const uint64_t end = t.offset + data[i].size();
    expected_offset = (end + alignment - 1) / alignment * alignment;
    EXPECT_EQ(f.bytes.substr(f.data_start + end, expected_offset - end),
              std::string(expected_offset - end, '\0'));
  }
  EXPECT_EQ(f.bytes.size(), f.data_start + expected_offset);  // the last tensor is padded too
  EXPECT_EQ(w.FileSize(), f.bytes.size());
}

TEST(GgufWriterTest, TensorsAreAlignedAndIntact) {
  for (uint32_t alignment : {8u, 32u, 64u, 4096u}) CheckMixedTensors(alignment);
}

TEST(GgufWriterTest, RejectsAlignmentsThatAreNotPowersOfTwoOfAtLeastEight) {
  for (uint32_t alignment : {0u, 1u, 4u, 12u, 48u}) {
    GgufWriter w(alignment);
    const std::string path = TempPath("align" + std::to_string(alignment) + ".gguf");
    const absl::Status status = w.Write(path);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << alignment;
    EXPECT_NE(status.message().find("alignment"), absl::string_view::npos) << status;
    EXPECT_FALSE(std::filesystem::exists(path));
  }
  GgufWriter w;
  w.SetUint32("general.alignment", 64);  // must go through the constructor
  EXPECT_EQ(w.Write(TempPath("align-key.gguf")).code(), absl::StatusCode::kInvalidArgument);
}

TEST(GgufWriterTest, AddTensorRejectsBadTensors) {
  GgufWriter w;
  const std::vector<uint8_t> four(4);
  ASSERT_TRUE(w.AddTensor("x", TensorType::kF32, {1}, four).ok());
  EXPECT_FALSE(w.AddTensor("x", TensorType::kF32, {1}, four).ok());  // duplicate
  EXPECT_FALSE(w.AddTensor("", TensorType::kF32, {1}, four).ok());
  EXPECT_FALSE(w.AddTensor(std::string(64, 'n'), TensorType::kF32, {1}, four).ok());
  EXPECT_TRUE(w.AddTensor(std::string(63, 'n'), TensorType::kF32, {1}, four).ok());
  EXPECT_FALSE(w.AddTensor("zero", TensorType::kF32, {0}, std::span<const uint8_t>()).ok());
  EXPECT_FALSE(w.AddTensor("neg", TensorType::kF32, {-1}, four).ok());
  EXPECT_FALSE(w.AddTensor("nodims", TensorType::kF32, {}, four).ok());
  EXPECT_FALSE(w.AddTensor("fivedims", TensorType::kF32, {1, 1, 1, 1, 1}, four).ok());
  EXPECT_FALSE(w.AddTensor("huge", TensorType::kF32, {int64_t{1} << 30, int64_t{1} << 30},
                           [](GgufTensorSink&) { return absl::OkStatus(); })
                   .ok());
  const absl::Status partial_block =
      w.AddTensor("q", TensorType::kQ8_0, {33}, std::vector<uint8_t>(34));
  EXPECT_FALSE(partial_block.ok());
  EXPECT_NE(partial_block.message().find("q8_0"), absl::string_view::npos) << partial_block;
  EXPECT_FALSE(w.AddTensor("g", TensorType::kQ8Group, {4}, four).ok());
  EXPECT_FALSE(w.AddTensor("short", TensorType::kF32, {2}, four).ok());  // 4 of 8 bytes
  EXPECT_TRUE(w.AddTensor("short", TensorType::kF32, {1}, four).ok());   // undone above
  // The rejected tensors left no trace.
  const std::string path = TempPath("rejects.gguf");
  ASSERT_TRUE(w.Write(path).ok());
  const DecodedFile f = Decode(path);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[2].name, "short");
  EXPECT_EQ(f.tensors[2].offset, 64u);
}

// ---- Streaming and failures --------------------------------------------------------------

TEST(GgufWriterTest, StreamsDataInPiecesInFileOrder) {
  GgufWriter w;
  std::vector<std::string> calls;
  const std::vector<uint8_t> big = Pattern(100000, 3);
  ASSERT_TRUE(
      w.AddTensor("big", TensorType::kF32, {25000}, [&](GgufTensorSink& sink) -> absl::Status {
         calls.push_back("big");
         for (size_t i = 0; i < big.size(); i += 999) {
           const size_t n = std::min<size_t>(999, big.size() - i);
           if (absl::Status s = sink.Write(big.data() + i, n); !s.ok()) {
             return s;
           }
         }
         EXPECT_EQ(sink.remaining(), 0u);
         return absl::OkStatus();
       }).ok());
  ASSERT_TRUE(w.AddTensor("small", TensorType::kF16, {2}, [&](GgufTensorSink& sink) {
                 calls.push_back("small");
                 const uint16_t h[2] = {F32ToF16(1.0f), F32ToF16(-2.0f)};
                 return sink.Write(h, sizeof(h));
               }).ok());
  const std::string path = TempPath("stream.gguf");
  ASSERT_TRUE(w.Write(path).ok());
  EXPECT_EQ(calls, (std::vector<std::string>{"big", "small"}));
  const DecodedFile f = Decode(path);
  EXPECT_EQ(f.TensorBytes(f.tensors[0], big.size()), std::string(big.begin(), big.end()));
  EXPECT_EQ(f.tensors[1].offset, 100000u);
}

TEST(GgufWriterTest, FailedWriteLeavesNoFileAndKeepsTheOldOne) {
  const std::string path = TempPath("keep.gguf");
  {
    std::FILE* old = std::fopen(path.c_str(), "wb");
    ASSERT_NE(old, nullptr);
    std::fputs("old contents", old);
    std::fclose(old);
  }
  struct Case {
    const char* what;
    GgufWriter::TensorDataFn fn;
    const char* message;
  };
  const std::vector<uint8_t> eight(8);
  const std::vector<Case> cases = {
      {"too few bytes", [&](GgufTensorSink& sink) { return sink.Write(eight.data(), 4); },
       "produced 4 of its 8 bytes"},
      {"too many bytes",
       [&](GgufTensorSink& sink) {
         return sink.Write(eight.data(), 8).ok() ? sink.Write(eight.data(), 1) : absl::OkStatus();
       },
       "more than its 8 bytes"},
      {"callback error", [](GgufTensorSink&) { return absl::DataLossError("generator broke"); },
       "generator broke"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    GgufWriter w;
    ASSERT_TRUE(w.AddTensor("t", TensorType::kF32, {2}, c.fn).ok());
    const absl::Status status = w.Write(path);
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.message().find(c.message), absl::string_view::npos) << status;
    EXPECT_EQ(testing::ReadFile(path), "old contents");
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  }
}

TEST(GgufWriterTest, UnwritablePathIsAnErrorNamingIt) {
  GgufWriter w;
  const std::string path = TempPath("no/such/dir/x.gguf");
  const absl::Status status = w.Write(path);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("no/such/dir/x.gguf.tmp"), absl::string_view::npos) << status;
}

// ---- Through the project's reader --------------------------------------------------------

// A small llama model written tensor by tensor, plus metadata of every scalar type, read back
// by ModelFile::Open with a non-default alignment.
TEST(GgufWriterTest, ModelFileReadsWhatItWrites) {
  SynthSpec spec;
  spec.dim = 64;
  spec.hidden_dim = 96;
  spec.n_layers = 2;
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.vocab_size = 300;
  spec.context_length = 128;
  spec.weight_type = TensorType::kQ8_0;
  absl::StatusOr<Vocabulary> vocab = SynthVocabulary(spec.vocab_size);
  ASSERT_TRUE(vocab.ok()) << vocab.status();

  GgufWriter w(64);
  w.SetString("general.architecture", "llama");
  w.SetUint32("llama.context_length", spec.context_length);
  w.SetUint32("llama.embedding_length", spec.dim);
  w.SetUint32("llama.block_count", spec.n_layers);
  w.SetUint32("llama.feed_forward_length", spec.hidden_dim);
  w.SetUint32("llama.attention.head_count", spec.n_heads);
  w.SetUint32("llama.attention.head_count_kv", spec.n_kv_heads);
  w.SetFloat32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  w.SetFloat32("llama.rope.freq_base", 500000.0f);
  w.SetString("tokenizer.ggml.model", "llama");
  w.SetArray("tokenizer.ggml.tokens", std::span<const std::string>(vocab->pieces));
  w.SetArray("tokenizer.ggml.scores", std::span<const float>(vocab->scores));
  std::vector<int32_t> kinds;
  for (TokenKind k : vocab->kinds) kinds.push_back(static_cast<int32_t>(k));
  w.SetArray("tokenizer.ggml.token_type", std::span<const int32_t>(kinds));
  w.SetUint8("x.u8", 7);
  w.SetInt8("x.i8", -7);
  w.SetUint16("x.u16", 700);
  w.SetInt16("x.i16", -700);
  w.SetInt32("x.i32", -70000);
  w.SetUint64("x.u64", 7000000000ull);
  w.SetInt64("x.i64", -7000000000ll);
  w.SetFloat64("x.f64", 0.25);
  w.SetBool("x.bool", true);
  w.SetString("x.str", "hello");
  w.SetArray("x.arr", std::vector<int16_t>{1, 2, 3});

  std::vector<std::vector<uint8_t>> data;
  const std::vector<SynthTensor> plan = SynthTensorPlan(spec);
  for (size_t i = 0; i < plan.size(); ++i) {
    const SynthTensor& t = plan[i];
    // Valid Q8_0 blocks need finite f16 scales: quantize a pattern rather than raw bytes.
    std::vector<float> values(t.cols() * t.rows());
    for (size_t j = 0; j < values.size(); ++j) values[j] = std::sin(0.1f * (j + i));
    data.emplace_back(TensorBytes(t.type, values.size()));
    for (int64_t r = 0; r < t.rows(); ++r) {
      QuantizeRow(t.type, std::span<const float>(values).subspan(r * t.cols(), t.cols()),
                  data.back().data() + r * TensorBytes(t.type, t.cols()));
    }
    ASSERT_TRUE(w.AddTensor(t.name, t.type, t.shape, data.back()).ok());
  }
  const std::string path = TempPath("llama.gguf");
  ASSERT_TRUE(w.Write(path).ok());

  absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 96);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_EQ(c.context_length, 128);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_freq_base, 500000.0f);
  ASSERT_TRUE((*model)->vocabulary().has_value());
  EXPECT_EQ((*model)->vocabulary()->pieces, vocab->pieces);

  std::map<std::string, std::string> meta((*model)->metadata().begin(), (*model)->metadata().end());
  EXPECT_EQ(meta["gguf.alignment"], "64");
  EXPECT_EQ(meta["gguf.version"], "3");
  EXPECT_EQ(meta["x.u8"], "7");
  EXPECT_EQ(meta["x.i8"], "-7");
  EXPECT_EQ(meta["x.u16"], "700");
  EXPECT_EQ(meta["x.i16"], "-700");
  EXPECT_EQ(meta["x.i32"], "-70000");
  EXPECT_EQ(meta["x.u64"], "7000000000");
  EXPECT_EQ(meta["x.i64"], "-7000000000");
  EXPECT_EQ(meta["x.f64"], "0.25");
  EXPECT_EQ(meta["x.bool"], "true");
  EXPECT_NE(meta["x.str"].find("hello"), std::string::npos);
  EXPECT_EQ(meta["x.arr"], "[3 values]");

  ASSERT_EQ((*model)->tensors().size(), plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorView* t = (*model)->Find(plan[i].name);
    ASSERT_NE(t, nullptr) << plan[i].name;
    EXPECT_EQ(t->type, plan[i].type);
    EXPECT_EQ(t->shape, plan[i].shape);
    ASSERT_EQ(t->bytes, data[i].size());
    EXPECT_EQ(std::memcmp(t->data, data[i].data(), t->bytes), 0) << plan[i].name;
    EXPECT_EQ(t->file_offset % 64, 0u);
  }
}

}  // namespace
}  // namespace shardrun
