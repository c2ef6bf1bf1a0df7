#include "model/model_file.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <tuple>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/gguf_reader.h"
#include "model/llama2c_reader.h"
#include "spdlog/spdlog.h"

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

// Bounds on hyperparameters. They are far above any real llama model and low enough that
// every product the readers form from them (vocab x dim, layers x hidden x dim, ...) fits in
// 64 bits, so sizing a file from its header cannot overflow.
constexpr int64_t kMaxDim = int64_t{1} << 16;
constexpr int64_t kMaxHiddenDim = int64_t{1} << 18;
constexpr int64_t kMaxLayers = int64_t{1} << 12;
constexpr int64_t kMaxVocab = int64_t{1} << 23;
constexpr int64_t kMaxContext = int64_t{1} << 24;
constexpr int64_t kMaxExperts = int64_t{1} << 10;

template <typename... Args>
absl::Status Invalid(std::string_view file, const Args&... args) {
  return absl::InvalidArgumentError(Cat(file, ": ", args...));
}

absl::Status CheckRange(std::string_view file, std::string_view what, int64_t value, int64_t lo,
                        int64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return Invalid(file, what, " is ", value, "; it must be in [", lo, ", ", hi, "]");
}

// The alignment a type's data needs in memory: that of its element or block struct. Reading a
// misaligned float through a float pointer is undefined behaviour, so misaligned tensors are
// refused rather than copied.
size_t RequiredAlignment(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return alignof(float);
    case TensorType::kF16:
    case TensorType::kBF16:
      return alignof(uint16_t);
    case TensorType::kQ8_0:
      return alignof(BlockQ8_0);
    case TensorType::kQ4_0:
      return alignof(BlockQ4_0);
    case TensorType::kQ8Group:
      return alignof(int8_t);
  }
  return 1;
}

std::string ShapeString(std::span<const int64_t> shape) {
  return Cat("{", absl::StrJoin(shape, ", "), "}");
}

// ggml shapes carry implicit trailing 1s: {64} and {64, 1} are the same tensor.
std::span<const int64_t> Trimmed(std::span<const int64_t> shape) {
  size_t n = shape.size();
  while (n > 1 && shape[n - 1] == 1) --n;
  return shape.first(n);
}

bool SameShape(std::span<const int64_t> a, std::span<const int64_t> b) {
  const auto ta = Trimmed(a);
  const auto tb = Trimmed(b);
  return std::equal(ta.begin(), ta.end(), tb.begin(), tb.end());
}

// The layer a "blk.N.*" tensor belongs to, or -1 for any other name (or a malformed number).
int64_t LayerOf(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  name.remove_prefix(4);
  const size_t dot = name.find('.');
  int64_t layer;
  if (dot == std::string_view::npos || !absl::SimpleAtoi(Piece(name.substr(0, dot)), &layer))
    return -1;
  return layer;
}

absl::Status ValidateVocabulary(std::string_view file, const Vocabulary& vocab, int vocab_size) {
  if (vocab.size() != vocab_size) {
    return Invalid(file, "the vocabulary has ", vocab.size(), " tokens but the model has ",
                   vocab_size, " embedding rows");
  }
  if (vocab.scores.size() != vocab.pieces.size() || vocab.kinds.size() != vocab.pieces.size()) {
    return Invalid(file, "the vocabulary has ", vocab.pieces.size(), " tokens, ",
                   vocab.scores.size(), " scores and ", vocab.kinds.size(), " token types");
  }
  for (const auto& [what, id] : {std::pair<std::string_view, int>{"bos", vocab.bos_id},
                                 {"eos", vocab.eos_id},
                                 {"unknown", vocab.unk_id}}) {
    if (id < 0 || id >= vocab.size()) {
      return Invalid(file, "the ", what, " token id ", id, " is outside the vocabulary of ",
                     vocab.size(), " tokens");
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view ModelFormatName(ModelFormat format) {
  switch (format) {
    case ModelFormat::kGguf:
      return "gguf";
    case ModelFormat::kLlama2cLegacy:
      return "llama2.c legacy";
    case ModelFormat::kLlama2cV1:
      return "llama2.c version 1";
    case ModelFormat::kLlama2cV2:
      return "llama2.c version 2";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<ModelFile>> ModelFile::Open(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> mapping = MappedFile::Open(path);
  if (!mapping.ok()) return mapping.status();
  absl::StatusOr<std::unique_ptr<ModelFile>> model =
      Parse(path, (*mapping)->data(), (*mapping)->size());
  if (!model.ok()) return model.status();
  (*model)->set_mapping(std::move(*mapping));
  spdlog::debug("{}: {} model, {} tensors, {} bytes", path, ModelFormatName((*model)->format()),
                (*model)->tensors().size(), (*model)->file_size());
  return model;
}

absl::StatusOr<std::unique_ptr<ModelFile>> ModelFile::Parse(std::string_view name,
                                                            const uint8_t* data, size_t size) {
  if (data == nullptr || size == 0) return Invalid(name, "file is empty");
  // GGUF has a magic; export.py's versions have theirs ("ak42"); the legacy llama2.c format
  // has none, so whatever is neither is read (and validated) as a legacy header.
  absl::StatusOr<std::unique_ptr<ModelFile>> model;
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) {
    model = ReadGguf(name, data, size);
  } else if (size < 4 && std::memcmp(data, "GGUF", size) == 0) {
    return Invalid(name, "truncated: ", size, " bytes of a GGUF magic and nothing else");
  } else {
    model = ReadLlama2c(name, data, size);
  }
  if (model.ok()) (*model)->file_data_ = data;
  return model;
}

const TensorView* ModelFile::Find(std::string_view name) const {
  if (auto it = index_.find(Piece(name));
      it != index_.end() && it->second < tensors_.size() && tensors_[it->second].name == name) {
    return &tensors_[it->second];
  }
  for (const TensorView& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<uint64_t> ModelFile::AddTensor(std::string name, TensorType type,
                                              std::vector<int64_t> shape, const uint8_t* file_data,
                                              uint64_t offset, int group_size,
                                              uint64_t scales_offset) {
  if (index_.contains(name)) return Invalid(path_, "duplicate tensor name ", name);
  if (shape.empty() || shape.size() > 4) {
    return Invalid(path_, "tensor ", name, " has ", shape.size(),
                   " dimensions; shardrun supports 1 to 4");
  }
  int64_t elements = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] <= 0) {
      return Invalid(path_, "tensor ", name, " has dimension ", i, " of size ", shape[i],
                     "; every dimension must be positive");
    }
    if (__builtin_mul_overflow(elements, shape[i], &elements)) {
      return Invalid(path_, "tensor ", name, " of shape ", ShapeString(shape),
                     " has more elements than fit in 64 bits");
    }
  }
  const int block = BlockElements(type);
  if (shape[0] % block != 0) {
    return Invalid(path_, "tensor ", name, " of type ", TensorTypeName(type), " has rows of ",
                   shape[0], " values, not a multiple of its block size ", block);
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(static_cast<uint64_t>(elements / block), BlockBytes(type), &bytes)) {
    return Invalid(path_, "tensor ", name, " of shape ", ShapeString(shape),
                   " has more bytes than fit in 64 bits");
  }
  if (offset > file_size_ || bytes > file_size_ - offset) {
    return Invalid(path_, "tensor ", name, " (", bytes, " bytes at offset ", offset,
                   ") extends past the end of the file (", file_size_,
                   " bytes): truncated or a bad offset");
  }
  const size_t alignment = RequiredAlignment(type);
  if (reinterpret_cast<uintptr_t>(file_data + offset) % alignment != 0) {
    return Invalid(path_, "tensor ", name, " data at offset ", offset,
                   " is misaligned: ", TensorTypeName(type), " data must be aligned to ", alignment,
                   " bytes");
  }
  TensorView view;
  view.name = std::move(name);
  view.type = type;
  view.shape = std::move(shape);
  view.data = file_data + offset;
  view.bytes = static_cast<size_t>(bytes);
  view.file_offset = offset;
  uint64_t total = bytes;
  if (type == TensorType::kQ8Group) {
    if (group_size <= 0) {
      return Invalid(path_, "tensor ", view.name, " has group size ", group_size,
                     "; it must be positive");
    }
    if (view.shape[0] % group_size != 0) {
      return Invalid(path_, "group size ", group_size, " does not divide the row length ",
                     view.shape[0], " of tensor ", view.name);
    }
    // elements / group_size <= bytes <= file size, so this cannot overflow.
    const uint64_t scale_bytes = static_cast<uint64_t>(elements / group_size) * sizeof(float);
    if (scales_offset > file_size_ || scale_bytes > file_size_ - scales_offset) {
      return Invalid(path_, "the scales of tensor ", view.name, " (", scale_bytes,
                     " bytes at offset ", scales_offset, ") extend past the end of the file (",
                     file_size_, " bytes): truncated or a bad offset");
    }
    if (reinterpret_cast<uintptr_t>(file_data + scales_offset) % alignof(float) != 0) {
      return Invalid(path_, "the scales of tensor ", view.name, " at offset ", scales_offset,
                     " are misaligned: float32 data must be aligned to 4 bytes");
    }
    view.group_scales = reinterpret_cast<const float*>(file_data + scales_offset);
    view.group_size = group_size;
    total += scale_bytes;
  }
  index_.emplace(view.name, tensors_.size());
  tensors_.push_back(std::move(view));
  return total;
}

absl::Status ValidateLlamaConfig(std::string_view file, const ModelConfig& c) {
  struct Bound {
    std::string_view what;
    int64_t value, lo, hi;
  };
  for (const Bound& b : {
           Bound{"dim (embedding length)", c.dim, 1, kMaxDim},
           Bound{"hidden_dim (feed-forward length)", c.hidden_dim, 1, kMaxHiddenDim},
           Bound{"n_layers (block count)", c.n_layers, 1, kMaxLayers},
           Bound{"n_heads (attention head count)", c.n_heads, 1, std::max<int64_t>(c.dim, 1)},
           Bound{"n_kv_heads (attention KV head count)", c.n_kv_heads, 1,
                 std::max<int64_t>(c.n_heads, 1)},
           Bound{"vocab_size", c.vocab_size, 1, kMaxVocab},
           Bound{"context_length", c.context_length, 1, kMaxContext},
           Bound{"n_experts (expert count)", c.n_experts, 0, kMaxExperts},
       }) {
    if (absl::Status s = CheckRange(file, b.what, b.value, b.lo, b.hi); !s.ok()) return s;
  }
  if (c.dim % c.n_heads != 0) {
    return Invalid(file, "dim ", c.dim, " is not a multiple of n_heads ", c.n_heads);
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return Invalid(file, "n_heads ", c.n_heads, " is not a multiple of n_kv_heads ", c.n_kv_heads);
  }
  if (c.head_size() % 2 != 0) {
    return Invalid(file, "head size ", c.head_size(), " (dim ", c.dim, " / n_heads ", c.n_heads,
                   ") is odd; rotary embeddings rotate pairs");
  }
  if (c.n_experts == 0 && c.n_experts_used != 0) {
    return Invalid(file, "n_experts_used is ", c.n_experts_used, " but the model has no experts");
  }
  if (c.n_experts > 0) {
    if (absl::Status s = CheckRange(file, "n_experts_used (experts per token)", c.n_experts_used, 1,
                                    c.n_experts);
        !s.ok()) {
      return s;
    }
  }
  if (!std::isfinite(c.rope_freq_base) || c.rope_freq_base <= 0.0f) {
    return Invalid(file, "rope_freq_base is ", c.rope_freq_base, "; it must be positive");
  }
  if (!std::isfinite(c.rms_norm_eps) || c.rms_norm_eps <= 0.0f || c.rms_norm_eps >= 1.0f) {
    return Invalid(file, "rms_norm_eps is ", c.rms_norm_eps, "; it must be in (0, 1)");
  }
  return absl::OkStatus();
}

absl::Status ValidateLlamaModel(const ModelFile& model) {
  const std::string& file = model.path();
  const ModelConfig& c = model.config();
  if (c.architecture != "llama") {
    return Invalid(file, "architecture is \"", c.architecture, "\"; shardrun runs only llama");
  }
  if (absl::Status s = ValidateLlamaConfig(file, c); !s.ok()) return s;

  const int64_t dim = c.dim, hidden = c.hidden_dim, kv_dim = c.kv_dim(), vocab = c.vocab_size;
  const int64_t experts = c.n_experts;
  const std::string implied =
      Cat("dim ", dim, ", hidden_dim ", hidden, ", kv_dim ", kv_dim, ", vocab ", vocab,
          experts > 0 ? Cat(", ", experts, " experts") : "");
  auto expect = [&](const std::string& name, std::vector<int64_t> shape,
                    bool is_norm) -> absl::Status {
    const TensorView* t = model.Find(name);
    if (t == nullptr) return Invalid(file, "missing tensor ", name);
    if (!SameShape(t->shape, shape)) {
      return Invalid(file, "tensor ", name, " has shape ", ShapeString(t->shape),
                     "; the hyperparameters (", implied, ") need ", ShapeString(shape));
    }
    if (is_norm && t->type != TensorType::kF32) {
      return Invalid(file, "tensor ", name, " is ", TensorTypeName(t->type),
                     "; norm weights must be f32");
    }
    return absl::OkStatus();
  };
  std::vector<std::pair<std::string, std::vector<int64_t>>> required = {
      {"token_embd.weight", {dim, vocab}}};
  if (model.Find("output.weight") != nullptr) {
    if (c.tied_output) {
      return Invalid(file, "has output.weight but is marked as sharing the token embedding");
    }
    required.push_back({"output.weight", {dim, vocab}});
  } else if (!c.tied_output) {
    return Invalid(file, "missing tensor output.weight (the classifier is not shared)");
  }
  for (const auto& [name, shape] : required) {
    if (absl::Status s = expect(name, shape, false); !s.ok()) return s;
  }
  if (absl::Status s = expect("output_norm.weight", {dim}, true); !s.ok()) return s;

  for (int layer = 0; layer < c.n_layers; ++layer) {
    auto name = [layer](std::string_view suffix) { return LayerTensorName(layer, suffix); };
    std::vector<std::tuple<std::string, std::vector<int64_t>, bool>> tensors = {
        {name("attn_norm"), {dim}, true},         {name("attn_q"), {dim, dim}, false},
        {name("attn_k"), {dim, kv_dim}, false},   {name("attn_v"), {dim, kv_dim}, false},
        {name("attn_output"), {dim, dim}, false}, {name("ffn_norm"), {dim}, true},
    };
    if (experts > 0) {
      tensors.push_back({name("ffn_gate_inp"), {dim, experts}, false});
      tensors.push_back({name("ffn_gate_exps"), {dim, hidden, experts}, false});
      tensors.push_back({name("ffn_up_exps"), {dim, hidden, experts}, false});
      tensors.push_back({name("ffn_down_exps"), {hidden, dim, experts}, false});
    } else {
      tensors.push_back({name("ffn_gate"), {dim, hidden}, false});
      tensors.push_back({name("ffn_down"), {hidden, dim}, false});
      tensors.push_back({name("ffn_up"), {dim, hidden}, false});
      for (std::string_view moe :
           {"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}) {
        if (model.Find(name(moe)) != nullptr) {
          return Invalid(file, "has expert tensor ", name(moe),
                         " but the hyperparameters declare no experts");
        }
      }
    }
    for (const auto& [tensor, shape, is_norm] : tensors) {
      if (absl::Status s = expect(tensor, shape, is_norm); !s.ok()) return s;
    }
  }

  for (const TensorView& t : model.tensors()) {
    if (const int64_t layer = LayerOf(t.name); layer >= c.n_layers) {
      return Invalid(file, "tensor ", t.name, " belongs to layer ", layer, ", but the model has ",
                     c.n_layers, " layers");
    }
    if (t.type == TensorType::kQ8Group &&
        (t.group_scales == nullptr || t.group_size <= 0 || t.cols() % t.group_size != 0)) {
      return Invalid(file, "tensor ", t.name, " has group size ", t.group_size,
                     ", which does not divide its rows of ", t.cols(), " values");
    }
  }
  if (model.vocabulary().has_value()) {
    return ValidateVocabulary(file, *model.vocabulary(), c.vocab_size);
  }
  return absl::OkStatus();
}

std::string LayerTensorName(int layer, std::string_view suffix) {
  return Cat("blk.", layer, ".", suffix, ".weight");
}

}  // namespace shardrun
