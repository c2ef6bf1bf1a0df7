#include "model/llama2c_reader.h"

#include <climits>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace shardrun {
namespace {

// Debian's abseil has its own string_view, which StrCat does not take std's for.
absl::string_view Piece(std::string_view s) { return absl::string_view(s.data(), s.size()); }
template <typename T>
const T& Piece(const T& value) {
  return value;
}
template <typename... Args>
std::string Cat(const Args&... args) {
  return absl::StrCat(Piece(args)...);
}

// llama2.c's Config struct, as every version writes it.
struct Header {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
};
static_assert(sizeof(Header) == kLlama2cLegacyHeaderBytes);

// Offsets inside the 256-byte header of versions 1 and 2 (export.py packs them unaligned).
constexpr size_t kVersionOffset = 4;
constexpr size_t kConfigOffset = 8;
constexpr size_t kSharedClassifierOffset = kConfigOffset + sizeof(Header);  // 36
constexpr size_t kGroupSizeOffset = kSharedClassifierOffset + 1;            // 37, version 2

template <typename... Args>
absl::Status Invalid(std::string_view file, const Args&... args) {
  return absl::InvalidArgumentError(Cat(file, ": ", args...));
}

template <typename T>
T Load(const uint8_t* data, size_t offset) {
  T value;
  std::memcpy(&value, data + offset, sizeof(T));
  return value;
}

// The tensors of a checkpoint in file order, and the bytes they take.
class Layout {
 public:
  Layout(int n_layers, int group_size) : n_layers_(n_layers), group_size_(group_size) {}

  void Add(std::string name, std::vector<int64_t> shape, TensorType type) {
    int64_t elements = 1;
    for (int64_t d : shape) elements *= d;
    // The hyperparameters are validated before the layout is built, so no tensor has more
    // than 2^39 values and the sum over at most 2^12 layers cannot overflow.
    bytes_ += type == TensorType::kQ8Group
                  ? static_cast<uint64_t>(elements) +
                        static_cast<uint64_t>(elements / group_size_) * sizeof(float)
                  : static_cast<uint64_t>(elements) * sizeof(float);
    items_.push_back({std::move(name), std::move(shape), type, 0});
  }
  void AddPerLayer(std::string_view suffix, const std::vector<int64_t>& shape, TensorType type) {
    for (int layer = 0; layer < n_layers_; ++layer)
      Add(LayerTensorName(layer, suffix), shape, type);
  }
  // Bytes the readers pass over (legacy files' precomputed RoPE tables).
  void Skip(uint64_t bytes) {
    bytes_ += bytes;
    items_.push_back({"", {}, TensorType::kF32, bytes});
  }
  uint64_t bytes() const { return bytes_; }

  // Adds the tensors to `model`, the first one starting at byte `start` of `data`. A version-2
  // tensor is its int8 values immediately followed by its scales.
  absl::Status AddTo(ModelFile& model, const uint8_t* data, uint64_t start) const {
    uint64_t offset = start;
    for (const Item& item : items_) {
      if (item.name.empty()) {
        offset += item.skip_bytes;
        continue;
      }
      int64_t elements = 1;
      for (int64_t d : item.shape) elements *= d;
      const bool grouped = item.type == TensorType::kQ8Group;
      absl::StatusOr<uint64_t> bytes =
          model.AddTensor(item.name, item.type, item.shape, data, offset, grouped ? group_size_ : 0,
                          grouped ? offset + static_cast<uint64_t>(elements) : 0);
      if (!bytes.ok()) return bytes.status();
      offset += *bytes;
    }
    return absl::OkStatus();
  }

 private:
  struct Item {
    std::string name;  // empty: skipped bytes
    std::vector<int64_t> shape;
    TensorType type;
    uint64_t skip_bytes;
  };
  int n_layers_;
  int group_size_;
  uint64_t bytes_ = 0;
  std::vector<Item> items_;
};

ModelConfig ConfigFrom(const Header& h) {
  ModelConfig c;
  c.dim = h.dim;
  c.hidden_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.vocab_size = h.vocab_size;
  c.context_length = h.seq_len;
  // llama2.c hard-codes these.
  c.rope_freq_base = 10000.0f;
  c.rms_norm_eps = 1e-5f;
  return c;
}

std::string Describe(const ModelConfig& c) {
  return Cat("dim ", c.dim, ", hidden_dim ", c.hidden_dim, ", ", c.n_layers, " layers, ", c.n_heads,
             " heads, ", c.n_kv_heads, " KV heads, vocab ", c.vocab_size,
             c.tied_output ? " (shared classifier)" : " (own classifier)", ", seq_len ",
             c.context_length);
}

absl::Status CheckSize(std::string_view file, const ModelConfig& c, std::string_view extra,
                       uint64_t expected, uint64_t actual) {
  if (actual == expected) return absl::OkStatus();
  const std::string says = Cat("header says ", Describe(c), extra, ", which needs ", expected,
                               " bytes; the file has ", actual, " bytes");
  if (actual < expected) return Invalid(file, "truncated: ", says);
  return Invalid(file, "size mismatch: ", says, " (", actual - expected, " too many)");
}

void AddMatrices(Layout& layout, const ModelConfig& c, TensorType type) {
  const int64_t dim = c.dim, kv_dim = c.kv_dim();
  layout.AddPerLayer("attn_q", {dim, dim}, type);
  layout.AddPerLayer("attn_k", {dim, kv_dim}, type);
  layout.AddPerLayer("attn_v", {dim, kv_dim}, type);
  layout.AddPerLayer("attn_output", {dim, dim}, type);
}

void AddFeedForward(Layout& layout, const ModelConfig& c, TensorType type) {
  const int64_t dim = c.dim, hidden = c.hidden_dim;
  layout.AddPerLayer("ffn_gate", {dim, hidden}, type);  // w1
  layout.AddPerLayer("ffn_down", {hidden, dim}, type);  // w2
  layout.AddPerLayer("ffn_up", {dim, hidden}, type);    // w3
}

absl::StatusOr<std::unique_ptr<ModelFile>> Finish(std::unique_ptr<ModelFile> model,
                                                  const Layout& layout, const uint8_t* data,
                                                  uint64_t start) {
  if (absl::Status s = layout.AddTo(*model, data, start); !s.ok()) return s;
  if (absl::Status s = ValidateLlamaModel(*model); !s.ok()) return s;
  return model;
}

// run.c's format: Config, then token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3
// (each for all layers), rms_final, the unused freq_cis_real/imag tables and, if vocab_size
// is negative, the classifier.
absl::StatusOr<std::unique_ptr<ModelFile>> ReadLegacy(std::string_view name, const uint8_t* data,
                                                      size_t size) {
  if (size < kLlama2cLegacyHeaderBytes) {
    return Invalid(name, "truncated or not a model: ", size,
                   " bytes, too few for a llama2.c header (", kLlama2cLegacyHeaderBytes,
                   "), and the file starts with neither \"GGUF\" nor \"ak42\"");
  }
  const Header h = Load<Header>(data, 0);
  if (h.vocab_size == INT_MIN) {
    return Invalid(name, "legacy llama2.c header: vocab_size ", h.vocab_size, " is out of range");
  }
  ModelConfig c = ConfigFrom(h);
  c.tied_output = h.vocab_size > 0;
  c.vocab_size = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  if (absl::Status s = ValidateLlamaConfig(
          Cat(name,
              ": legacy llama2.c header (the file starts with neither \"GGUF\" nor "
              "\"ak42\")"),
          c);
      !s.ok()) {
    return s;
  }
  const int64_t dim = c.dim, vocab = c.vocab_size;
  Layout layout(c.n_layers, 0);
  layout.Add("token_embd.weight", {dim, vocab}, TensorType::kF32);
  layout.AddPerLayer("attn_norm", {dim}, TensorType::kF32);
  AddMatrices(layout, c, TensorType::kF32);
  layout.AddPerLayer("ffn_norm", {dim}, TensorType::kF32);
  AddFeedForward(layout, c, TensorType::kF32);
  layout.Add("output_norm.weight", {dim}, TensorType::kF32);
  const uint64_t rope_table_bytes =
      2 * static_cast<uint64_t>(c.context_length) * (c.head_size() / 2) * sizeof(float);
  layout.Skip(rope_table_bytes);
  if (!c.tied_output) layout.Add("output.weight", {dim, vocab}, TensorType::kF32);
  if (absl::Status s = CheckSize(name, c, "", kLlama2cLegacyHeaderBytes + layout.bytes(), size);
      !s.ok()) {
    return s;
  }

  auto model = std::make_unique<ModelFile>(ModelFormat::kLlama2cLegacy, std::string(name), size);
  model->mutable_config() = c;
  auto& metadata = model->mutable_metadata();
  metadata.emplace_back("llama2c.version", "legacy (no magic)");
  metadata.emplace_back("llama2c.header_bytes", Cat(kLlama2cLegacyHeaderBytes));
  metadata.emplace_back("llama2c.vocab_size", Cat(h.vocab_size));
  metadata.emplace_back("llama2c.shared_classifier", c.tied_output ? "true" : "false");
  metadata.emplace_back("llama2c.rope_table_bytes", Cat(rope_table_bytes));
  return Finish(std::move(model), layout, data, kLlama2cLegacyHeaderBytes);
}

// export.py's versions: a 256-byte header (magic, version, Config, shared_classifier byte and,
// in version 2, the group size), then the norms first and the matrices after them.
absl::StatusOr<std::unique_ptr<ModelFile>> ReadVersioned(std::string_view name, const uint8_t* data,
                                                         size_t size) {
  if (size < kConfigOffset) {
    return Invalid(name, "truncated: ", size, " bytes of a ", kLlama2cHeaderBytes,
                   "-byte llama2.c header");
  }
  const int32_t version = Load<int32_t>(data, kVersionOffset);
  if (version != 1 && version != 2) {
    return Invalid(name, "llama2.c export version ", version,
                   " is not supported (shardrun reads versions 1 and 2)");
  }
  if (size < kLlama2cHeaderBytes) {
    return Invalid(name, "truncated: ", size, " bytes of a ", kLlama2cHeaderBytes,
                   "-byte llama2.c version ", version, " header");
  }
  const std::string header_name = Cat(name, ": llama2.c version ", version, " header");
  const Header h = Load<Header>(data, kConfigOffset);
  ModelConfig c = ConfigFrom(h);
  const uint8_t shared = data[kSharedClassifierOffset];
  if (shared > 1) return Invalid(header_name, "shared_classifier is ", int{shared}, ", not 0 or 1");
  c.tied_output = shared == 1;
  if (absl::Status s = ValidateLlamaConfig(header_name, c); !s.ok()) return s;

  int group_size = 0;
  if (version == 2) {
    group_size = Load<int32_t>(data, kGroupSizeOffset);
    if (group_size <= 0) {
      return Invalid(header_name, "group size ", group_size, " must be positive");
    }
    // Every weight row has dim or hidden_dim values; a group must not straddle two rows.
    for (const auto& [what, n] :
         {std::pair<std::string_view, int>{"dim", c.dim}, {"hidden_dim", c.hidden_dim}}) {
      if (n % group_size != 0) {
        return Invalid(header_name, "group size ", group_size, " does not divide ", what, " ", n);
      }
    }
  }

  const int64_t dim = c.dim, vocab = c.vocab_size;
  const TensorType matrix_type = version == 1 ? TensorType::kF32 : TensorType::kQ8Group;
  Layout layout(c.n_layers, group_size);
  layout.AddPerLayer("attn_norm", {dim}, TensorType::kF32);
  layout.AddPerLayer("ffn_norm", {dim}, TensorType::kF32);
  layout.Add("output_norm.weight", {dim}, TensorType::kF32);
  layout.Add("token_embd.weight", {dim, vocab}, matrix_type);
  AddMatrices(layout, c, matrix_type);
  AddFeedForward(layout, c, matrix_type);
  if (!c.tied_output) layout.Add("output.weight", {dim, vocab}, matrix_type);
  const std::string extra = version == 2 ? Cat(", group size ", group_size) : "";
  if (absl::Status s = CheckSize(name, c, extra, kLlama2cHeaderBytes + layout.bytes(), size);
      !s.ok()) {
    return s;
  }

  auto model = std::make_unique<ModelFile>(
      version == 1 ? ModelFormat::kLlama2cV1 : ModelFormat::kLlama2cV2, std::string(name), size);
  model->mutable_config() = c;
  auto& metadata = model->mutable_metadata();
  metadata.emplace_back("llama2c.version", Cat(version));
  metadata.emplace_back("llama2c.header_bytes", Cat(kLlama2cHeaderBytes));
  metadata.emplace_back("llama2c.shared_classifier", c.tied_output ? "true" : "false");
  if (version == 2) metadata.emplace_back("llama2c.group_size", Cat(group_size));
  return Finish(std::move(model), layout, data, kLlama2cHeaderBytes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFile>> ReadLlama2c(std::string_view name, const uint8_t* data,
                                                       size_t size) {
  if (size >= sizeof(uint32_t) && Load<uint32_t>(data, 0) == kLlama2cMagic) {
    return ReadVersioned(name, data, size);
  }
  return ReadLegacy(name, data, size);
}

}  // namespace shardrun
