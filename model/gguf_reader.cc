#include "model/gguf_reader.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/gguf_format.h"

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

using gguf::ValueType;

#define GGUF_RETURN_IF_ERROR(expr)               \
  do {                                           \
    absl::Status gguf_status_ = (expr);          \
    if (!gguf_status_.ok()) return gguf_status_; \
  } while (0)

// The smallest encodings, used to bound counts by the bytes left before looping on them:
// a metadata entry is an empty key, a type and a one-byte value; a tensor info an empty name,
// one dimension, a type and an offset; a string its length; a nested array its header.
constexpr uint64_t kMinEntryBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;
constexpr uint64_t kMinStringBytes = 8;
constexpr uint64_t kMinArrayBytes = 4 + 8;
// Deeper nesting than any real file uses; bounds the recursion (and so the stack).
constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kMaxNameBytes = 256;  // ggml allows 64; be generous, but printable
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
constexpr size_t kMaxShownStringBytes = 120;

template <typename... Args>
absl::Status Invalid(std::string_view file, const Args&... args) {
  return absl::InvalidArgumentError(Cat(file, ": ", args...));
}

std::string_view ValueTypeName(uint32_t type) {
  static constexpr std::string_view kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                "int32",  "float32", "bool",   "string", "array",
                                                "uint64", "int64",   "float64"};
  return type < std::size(kNames) ? kNames[type] : "unknown";
}

// Bytes of a fixed-size value; 0 for strings, arrays and unknown types.
size_t FixedSize(uint32_t type) {
  switch (static_cast<ValueType>(type)) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

// Text of an untrusted string for messages and `inspect`: control bytes escaped, cut short.
std::string Shown(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMaxShownStringBytes; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShownStringBytes) absl::StrAppend(&out, "... (", s.size(), " bytes)");
  return out;
}

bool IsPrintableAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// Reads little-endian fields from the file, refusing to read past its end. Errors name the
// file, what was being read (the context) and the byte position.
class Reader {
 public:
  Reader(std::string_view file, const uint8_t* data, size_t size)
      : file_(file), data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  void Seek(size_t pos) { pos_ = std::min(pos, size_); }
  void set_context(std::string context) { context_ = std::move(context); }

  template <typename... Args>
  absl::Status Error(const Args&... args) const {
    return absl::InvalidArgumentError(Cat(file_, ": ", context_, ": ", args...));
  }

  absl::Status Need(uint64_t bytes, std::string_view what) const {
    if (bytes <= remaining()) return absl::OkStatus();
    return Error("truncated at byte ", pos_, ": ", what, " needs ", bytes, " bytes, but only ",
                 remaining(), " remain");
  }

  template <typename T>
  absl::Status Read(T* out, std::string_view what) {
    GGUF_RETURN_IF_ERROR(Need(sizeof(T), what));
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadString(std::string_view* out, std::string_view what) {
    uint64_t length;
    GGUF_RETURN_IF_ERROR(Read(&length, what));
    if (length > remaining()) {
      return Error("truncated at byte ", pos_, ": ", what, " has length ", length, ", but only ",
                   remaining(), " bytes remain");
    }
    *out = std::string_view(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t bytes, std::string_view what) {
    GGUF_RETURN_IF_ERROR(Need(bytes, what));
    pos_ += bytes;
    return absl::OkStatus();
  }

 private:
  std::string_view file_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string context_ = "header";
};

// One metadata value. Arrays are not materialised: they are validated (skipped) while parsing
// and read again from `first` when the vocabulary needs them.
struct Value {
  uint32_t type = 0;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0;    // float32 and float64
  std::string_view s;
  uint32_t element_type = 0;  // arrays:
  uint64_t count = 0;
  size_t first = 0;  // file position of the first element

  bool is_array() const { return type == static_cast<uint32_t>(ValueType::kArray); }
  bool is_string() const { return type == static_cast<uint32_t>(ValueType::kString); }
};

std::optional<int64_t> AsInt(const Value& v) {
  switch (static_cast<ValueType>(v.type)) {
    case ValueType::kUint8:
    case ValueType::kUint16:
    case ValueType::kUint32:
      return static_cast<int64_t>(v.u);
    case ValueType::kUint64:
      if (v.u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
      return static_cast<int64_t>(v.u);
    case ValueType::kInt8:
    case ValueType::kInt16:
    case ValueType::kInt32:
    case ValueType::kInt64:
      return v.i;
    default:
      return std::nullopt;
  }
}

std::string ValueString(const Value& v) {
  switch (static_cast<ValueType>(v.type)) {
    case ValueType::kFloat32:
    case ValueType::kFloat64:
      return Cat(v.f);
    case ValueType::kBool:
      return v.u ? "true" : "false";
    case ValueType::kString:
      return Shown(v.s);
    case ValueType::kArray:
      return Cat("[", v.count, " values]");
    default: {
      if (std::optional<int64_t> i = AsInt(v)) return Cat(*i);
      return Cat(v.u);  // a uint64 above INT64_MAX
    }
  }
}

absl::Status SkipArray(Reader& r, uint32_t element_type, uint64_t count, int depth) {
  if (depth > kMaxArrayDepth) {
    return r.Error("arrays nested more than ", kMaxArrayDepth, " deep");
  }
  if (const size_t size = FixedSize(element_type); size > 0) {
    if (count > r.remaining() / size) {
      return r.Error("truncated at byte ", r.pos(), ": array of ", count, " ",
                     ValueTypeName(element_type), " values (", size, " bytes each), but only ",
                     r.remaining(), " bytes remain");
    }
    return r.Skip(count * size, "array");
  }
  switch (static_cast<ValueType>(element_type)) {
    case ValueType::kString: {
      if (count > r.remaining() / kMinStringBytes) {
        return r.Error("truncated at byte ", r.pos(), ": array of ", count, " strings, but only ",
                       r.remaining(), " bytes remain");
      }
      std::string_view s;
      for (uint64_t i = 0; i < count; ++i) {
        GGUF_RETURN_IF_ERROR(r.ReadString(&s, "array string"));
      }
      return absl::OkStatus();
    }
    case ValueType::kArray: {
      if (count > r.remaining() / kMinArrayBytes) {
        return r.Error("truncated at byte ", r.pos(), ": array of ", count, " arrays, but only ",
                       r.remaining(), " bytes remain");
      }
      for (uint64_t i = 0; i < count; ++i) {
        uint32_t inner_type;
        uint64_t inner_count;
        GGUF_RETURN_IF_ERROR(r.Read(&inner_type, "nested array type"));
        GGUF_RETURN_IF_ERROR(r.Read(&inner_count, "nested array length"));
        GGUF_RETURN_IF_ERROR(SkipArray(r, inner_type, inner_count, depth + 1));
      }
      return absl::OkStatus();
    }
    default:
      return r.Error("array of unknown value type ", element_type);
  }
}

absl::Status ReadValue(Reader& r, uint32_t type, Value* v) {
  v->type = type;
  switch (static_cast<ValueType>(type)) {
    case ValueType::kUint8: {
      uint8_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "uint8 value"));
      v->u = x;
      return absl::OkStatus();
    }
    case ValueType::kInt8: {
      int8_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "int8 value"));
      v->i = x;
      return absl::OkStatus();
    }
    case ValueType::kUint16: {
      uint16_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "uint16 value"));
      v->u = x;
      return absl::OkStatus();
    }
    case ValueType::kInt16: {
      int16_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "int16 value"));
      v->i = x;
      return absl::OkStatus();
    }
    case ValueType::kUint32: {
      uint32_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "uint32 value"));
      v->u = x;
      return absl::OkStatus();
    }
    case ValueType::kInt32: {
      int32_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "int32 value"));
      v->i = x;
      return absl::OkStatus();
    }
    case ValueType::kUint64:
      return r.Read(&v->u, "uint64 value");
    case ValueType::kInt64:
      return r.Read(&v->i, "int64 value");
    case ValueType::kFloat32: {
      float x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "float32 value"));
      v->f = x;
      return absl::OkStatus();
    }
    case ValueType::kFloat64:
      return r.Read(&v->f, "float64 value");
    case ValueType::kBool: {
      uint8_t x;
      GGUF_RETURN_IF_ERROR(r.Read(&x, "bool value"));
      if (x > 1) return r.Error("bool value is ", static_cast<int>(x), ", not 0 or 1");
      v->u = x;
      return absl::OkStatus();
    }
    case ValueType::kString:
      return r.ReadString(&v->s, "string value");
    case ValueType::kArray: {
      GGUF_RETURN_IF_ERROR(r.Read(&v->element_type, "array element type"));
      GGUF_RETURN_IF_ERROR(r.Read(&v->count, "array length"));
      v->first = r.pos();
      return SkipArray(r, v->element_type, v->count, 1);
    }
  }
  return r.Error("unknown value type ", type);
}

struct TensorInfo {
  std::string_view name;
  std::vector<int64_t> shape;
  TensorType type;
  uint64_t offset;
};

absl::Status ReadTensorInfo(Reader& r, std::string_view file, uint64_t index, TensorInfo* info) {
  r.set_context(Cat("tensor info ", index));
  GGUF_RETURN_IF_ERROR(r.ReadString(&info->name, "name"));
  if (info->name.empty() || info->name.size() > kMaxNameBytes || !IsPrintableAscii(info->name)) {
    return r.Error("tensor name \"", Shown(info->name), "\" is not 1 to ", kMaxNameBytes,
                   " printable ASCII characters");
  }
  r.set_context(Cat("tensor info ", index, " (", info->name, ")"));
  uint32_t n_dims;
  GGUF_RETURN_IF_ERROR(r.Read(&n_dims, "dimension count"));
  if (n_dims == 0 || n_dims > kMaxDims) {
    return r.Error("has ", n_dims, " dimensions; GGUF tensors have 1 to ", kMaxDims);
  }
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t extent;
    GGUF_RETURN_IF_ERROR(r.Read(&extent, "dimension"));
    if (extent == 0 || extent > static_cast<uint64_t>(INT64_MAX)) {
      return r.Error("dimension ", d, " is ", extent, "; it must be positive and below 2^63");
    }
    info->shape.push_back(static_cast<int64_t>(extent));
  }
  uint32_t ggml_type;
  GGUF_RETURN_IF_ERROR(r.Read(&ggml_type, "type"));
  std::optional<TensorType> type = TensorTypeFromGgml(ggml_type);
  if (!type.has_value()) {
    const std::string_view type_name = GgmlTypeName(ggml_type);
    return Invalid(file, "tensor ", info->name, " has type ",
                   type_name == "unknown" ? Cat("id ", ggml_type) : type_name,
                   ", which shardrun does not support (supported: f32, f16, bf16, q8_0, q4_0)");
  }
  info->type = *type;
  return r.Read(&info->offset, "offset");
}

// Typed access to the metadata, with errors that name the key.
class Metadata {
 public:
  Metadata(std::string_view file, const uint8_t* data, size_t size)
      : file_(file), data_(data), size_(size) {}

  absl::Status Add(std::string_view key, Value value) {
    if (!values_.emplace(Piece(key), value).second)
      return Invalid(file_, "duplicate metadata key ", key);
    return absl::OkStatus();
  }
  const Value* Find(std::string_view key) const {
    auto it = values_.find(Piece(key));
    return it == values_.end() ? nullptr : &it->second;
  }

  absl::StatusOr<std::optional<std::string_view>> String(std::string_view key) const {
    const Value* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return WrongType(key, *v, "a string");
    return v->s;
  }
  // An integer of any width that fits in an int, or `fallback` if the key is absent.
  absl::StatusOr<std::optional<int>> Int(std::string_view key,
                                         std::optional<int> fallback = std::nullopt) const {
    const Value* v = Find(key);
    if (v == nullptr) return fallback;
    std::optional<int64_t> i = AsInt(*v);
    const bool huge_uint64 = v->type == static_cast<uint32_t>(ValueType::kUint64);
    if (!i.has_value() && !huge_uint64) return WrongType(key, *v, "an integer");
    if (!i.has_value() || *i < INT_MIN || *i > INT_MAX) {
      return Invalid(file_, "metadata ", key, " = ", ValueString(*v), " is out of range");
    }
    return static_cast<int>(*i);
  }
  absl::StatusOr<int> RequiredInt(std::string_view key) const {
    absl::StatusOr<std::optional<int>> i = Int(key);
    if (!i.ok()) return i.status();
    if (!i->has_value()) return Invalid(file_, "missing metadata key ", key);
    return **i;
  }
  absl::StatusOr<float> Float(std::string_view key, float fallback) const {
    const Value* v = Find(key);
    if (v == nullptr) return fallback;
    if (v->type == static_cast<uint32_t>(ValueType::kFloat32) ||
        v->type == static_cast<uint32_t>(ValueType::kFloat64)) {
      return static_cast<float>(v->f);
    }
    return WrongType(key, *v, "a float");
  }
  absl::StatusOr<bool> Bool(std::string_view key, bool fallback) const {
    const Value* v = Find(key);
    if (v == nullptr) return fallback;
    if (v->type != static_cast<uint32_t>(ValueType::kBool)) return WrongType(key, *v, "a bool");
    return v->u != 0;
  }
  // An array of `element_type`, or nullptr if the key is absent.
  absl::StatusOr<const Value*> Array(std::string_view key, std::initializer_list<ValueType> types,
                                     std::string_view expected) const {
    const Value* v = Find(key);
    if (v == nullptr) return nullptr;
    if (v->is_array()) {
      for (ValueType t : types) {
        if (v->element_type == static_cast<uint32_t>(t)) return v;
      }
    }
    return WrongType(key, *v, expected);
  }

  // Element `i` of a validated fixed-size array.
  template <typename T>
  T Element(const Value& array, uint64_t i) const {
    T x;
    std::memcpy(&x, data_ + array.first + i * sizeof(T), sizeof(T));
    return x;
  }
  // The strings of a validated string array.
  absl::Status Strings(const Value& array, std::vector<std::string>* out) const {
    Reader r(file_, data_, size_);
    r.Seek(array.first);
    std::string_view s;
    for (uint64_t i = 0; i < array.count; ++i) {
      GGUF_RETURN_IF_ERROR(r.ReadString(&s, "string"));
      out->emplace_back(s);
    }
    return absl::OkStatus();
  }

 private:
  absl::Status WrongType(std::string_view key, const Value& v, std::string_view expected) const {
    std::string type(ValueTypeName(v.type));
    if (v.is_array()) type = Cat("an array of ", ValueTypeName(v.element_type));
    return Invalid(file_, "metadata ", key, " is ", type, "; expected ", expected);
  }

  std::string_view file_;
  const uint8_t* data_;
  size_t size_;
  absl::flat_hash_map<absl::string_view, Value> values_;
};

// Evaluates a StatusOr-returning call into `lhs`, returning its error.
#define GGUF_ASSIGN_OR_RETURN(lhs, expr)                \
  do {                                                  \
    auto gguf_value_ = (expr);                          \
    if (!gguf_value_.ok()) return gguf_value_.status(); \
    lhs = *std::move(gguf_value_);                      \
  } while (0)

absl::Status ReadConfig(const Metadata& kv, const ModelFile& model, ModelConfig* c) {
  std::string_view file = model.path();
  std::optional<std::string_view> arch;
  GGUF_ASSIGN_OR_RETURN(arch, kv.String("general.architecture"));
  if (!arch.has_value()) return Invalid(file, "missing metadata key general.architecture");
  if (*arch != "llama") {
    return Invalid(file, "architecture is \"", Shown(*arch), "\"; shardrun runs only llama");
  }
  std::optional<std::string_view> name;
  GGUF_ASSIGN_OR_RETURN(name, kv.String("general.name"));
  c->name = std::string(name.value_or(""));
  GGUF_ASSIGN_OR_RETURN(c->dim, kv.RequiredInt("llama.embedding_length"));
  GGUF_ASSIGN_OR_RETURN(c->hidden_dim, kv.RequiredInt("llama.feed_forward_length"));
  GGUF_ASSIGN_OR_RETURN(c->n_layers, kv.RequiredInt("llama.block_count"));
  GGUF_ASSIGN_OR_RETURN(c->n_heads, kv.RequiredInt("llama.attention.head_count"));
  std::optional<int> kv_heads;
  GGUF_ASSIGN_OR_RETURN(kv_heads, kv.Int("llama.attention.head_count_kv", c->n_heads));
  c->n_kv_heads = *kv_heads;
  GGUF_ASSIGN_OR_RETURN(c->context_length, kv.RequiredInt("llama.context_length"));
  GGUF_ASSIGN_OR_RETURN(c->rope_freq_base, kv.Float("llama.rope.freq_base", 10000.0f));
  GGUF_ASSIGN_OR_RETURN(c->rms_norm_eps, kv.Float("llama.attention.layer_norm_rms_epsilon", 1e-5f));
  std::optional<int> experts, experts_used;
  GGUF_ASSIGN_OR_RETURN(experts, kv.Int("llama.expert_count", 0));
  GGUF_ASSIGN_OR_RETURN(experts_used, kv.Int("llama.expert_used_count", 0));
  c->n_experts = *experts;
  c->n_experts_used = *experts_used;

  // The vocabulary size: stated, else the tokenizer's, else the embedding's rows.
  std::optional<int> vocab;
  GGUF_ASSIGN_OR_RETURN(vocab, kv.Int("llama.vocab_size"));
  if (!vocab.has_value()) {
    if (const Value* tokens = kv.Find("tokenizer.ggml.tokens"); tokens && tokens->is_array()) {
      vocab = static_cast<int>(std::min<uint64_t>(tokens->count, INT_MAX));
    } else if (const TensorView* embd = model.Find("token_embd.weight");
               embd && embd->shape.size() >= 2) {
      vocab = static_cast<int>(std::min<int64_t>(embd->shape[1], INT_MAX));
    } else {
      return Invalid(file,
                     "cannot tell the vocabulary size: no llama.vocab_size, "
                     "tokenizer.ggml.tokens or token_embd.weight");
    }
  }
  c->vocab_size = *vocab;
  c->tied_output = model.Find("output.weight") == nullptr;
  GGUF_RETURN_IF_ERROR(ValidateLlamaConfig(file, *c));

  std::optional<int> rope_dims;
  GGUF_ASSIGN_OR_RETURN(rope_dims, kv.Int("llama.rope.dimension_count"));
  if (rope_dims.has_value() && *rope_dims != c->head_size()) {
    return Invalid(file, "llama.rope.dimension_count is ", *rope_dims,
                   "; shardrun rotates whole heads of ", c->head_size());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<Vocabulary>> ReadVocabulary(const Metadata& kv, std::string_view file,
                                                         int vocab_size) {
  std::optional<std::string_view> model;
  GGUF_ASSIGN_OR_RETURN(model, kv.String("tokenizer.ggml.model"));
  if (!model.has_value()) return std::nullopt;
  if (*model != "llama") {
    return Invalid(file, "tokenizer \"", Shown(*model),
                   "\" is not supported; shardrun reads llama (SentencePiece) vocabularies");
  }
  const Value* tokens;
  GGUF_ASSIGN_OR_RETURN(
      tokens, kv.Array("tokenizer.ggml.tokens", {ValueType::kString}, "an array of strings"));
  if (tokens == nullptr) return Invalid(file, "missing metadata key tokenizer.ggml.tokens");
  // Checked before reading so that the pieces allocated are bounded by the model's size.
  if (tokens->count != static_cast<uint64_t>(vocab_size)) {
    return Invalid(file, "tokenizer.ggml.tokens has ", tokens->count,
                   " tokens but the model has a vocabulary of ", vocab_size);
  }
  const uint64_t n = tokens->count;
  Vocabulary vocab;
  vocab.style = VocabularyStyle::kSentencePiece;
  GGUF_RETURN_IF_ERROR(kv.Strings(*tokens, &vocab.pieces));
  for (const std::string& piece : vocab.pieces) {
    vocab.max_piece_length = std::max(vocab.max_piece_length, static_cast<int>(piece.size()));
  }

  const Value* scores;
  GGUF_ASSIGN_OR_RETURN(
      scores, kv.Array("tokenizer.ggml.scores", {ValueType::kFloat32}, "an array of float32"));
  if (scores != nullptr && scores->count != n) {
    return Invalid(file, "tokenizer.ggml.scores has ", scores->count, " values for ", n, " tokens");
  }
  vocab.scores.resize(n, 0.0f);
  for (uint64_t i = 0; scores != nullptr && i < n; ++i) {
    vocab.scores[i] = kv.Element<float>(*scores, i);
  }

  const Value* types;
  GGUF_ASSIGN_OR_RETURN(
      types, kv.Array("tokenizer.ggml.token_type", {ValueType::kInt32, ValueType::kUint32},
                      "an array of int32"));
  if (types != nullptr && types->count != n) {
    return Invalid(file, "tokenizer.ggml.token_type has ", types->count, " values for ", n,
                   " tokens");
  }
  vocab.kinds.resize(n, TokenKind::kNormal);
  for (uint64_t i = 0; types != nullptr && i < n; ++i) {
    const int32_t kind = kv.Element<int32_t>(*types, i);
    // 0 is llama.cpp's "undefined", which it treats as a normal token.
    if (kind < 0 || kind > static_cast<int32_t>(TokenKind::kByte)) {
      return Invalid(file, "token ", i, " has unknown token type ", kind);
    }
    vocab.kinds[i] = kind == 0 ? TokenKind::kNormal : static_cast<TokenKind>(kind);
  }

  std::optional<int> id;
  GGUF_ASSIGN_OR_RETURN(id, kv.Int("tokenizer.ggml.bos_token_id", 1));
  vocab.bos_id = *id;
  GGUF_ASSIGN_OR_RETURN(id, kv.Int("tokenizer.ggml.eos_token_id", 2));
  vocab.eos_id = *id;
  GGUF_ASSIGN_OR_RETURN(id, kv.Int("tokenizer.ggml.unknown_token_id", 0));
  vocab.unk_id = *id;
  GGUF_ASSIGN_OR_RETURN(vocab.add_bos, kv.Bool("tokenizer.ggml.add_bos_token", true));
  GGUF_ASSIGN_OR_RETURN(vocab.add_space_prefix, kv.Bool("tokenizer.ggml.add_space_prefix", true));
  return vocab;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelFile>> ReadGguf(std::string_view name, const uint8_t* data,
                                                    size_t size) {
  Reader r(name, data, size);
  uint32_t magic, version;
  uint64_t tensor_count, kv_count;
  GGUF_RETURN_IF_ERROR(r.Read(&magic, "magic"));
  if (magic != gguf::kMagic) return r.Error("not a GGUF file (bad magic)");
  GGUF_RETURN_IF_ERROR(r.Read(&version, "version"));
  if (version == 0x02000000 || version == 0x03000000) {
    return r.Error("big-endian GGUF files are not supported");
  }
  if (version != 2 && version != 3) {
    return r.Error("GGUF version ", version, " is not supported (only versions 2 and 3)");
  }
  GGUF_RETURN_IF_ERROR(r.Read(&tensor_count, "tensor count"));
  GGUF_RETURN_IF_ERROR(r.Read(&kv_count, "metadata entry count"));
  if (kv_count > r.remaining() / kMinEntryBytes) {
    return r.Error("truncated or corrupt: ", kv_count, " metadata entries cannot fit in the ",
                   r.remaining(), " bytes that remain");
  }

  auto model = std::make_unique<ModelFile>(ModelFormat::kGguf, std::string(name), size);
  Metadata kv(name, data, size);
  std::vector<std::pair<std::string, std::string>> shown;
  for (uint64_t i = 0; i < kv_count; ++i) {
    r.set_context(Cat("metadata entry ", i));
    std::string_view key;
    GGUF_RETURN_IF_ERROR(r.ReadString(&key, "key"));
    if (key.empty() || !IsPrintableAscii(key)) {
      return r.Error("key \"", Shown(key), "\" is not printable ASCII");
    }
    r.set_context(Cat("metadata entry ", i, " (", key, ")"));
    uint32_t type;
    GGUF_RETURN_IF_ERROR(r.Read(&type, "value type"));
    Value value;
    GGUF_RETURN_IF_ERROR(ReadValue(r, type, &value));
    GGUF_RETURN_IF_ERROR(kv.Add(key, value));
    shown.emplace_back(std::string(key), ValueString(value));
  }

  r.set_context("tensor infos");
  if (tensor_count > r.remaining() / kMinTensorInfoBytes) {
    return r.Error("truncated or corrupt: ", tensor_count, " tensor infos cannot fit in the ",
                   r.remaining(), " bytes that remain");
  }
  std::vector<TensorInfo> infos(tensor_count);
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GGUF_RETURN_IF_ERROR(ReadTensorInfo(r, name, i, &infos[i]));
  }

  uint64_t alignment = gguf::kDefaultAlignment;
  if (const Value* v = kv.Find("general.alignment")) {
    const std::optional<int64_t> a = AsInt(*v);
    if (!a.has_value() || *a <= 0 || static_cast<uint64_t>(*a) > kMaxAlignment ||
        (*a & (*a - 1)) != 0) {
      return Invalid(name, "general.alignment is ", ValueString(*v),
                     "; it must be a power of two up to 2^30");
    }
    alignment = static_cast<uint64_t>(*a);
  }
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  if (tensor_count > 0 && data_start > size) {
    return Invalid(name, "truncated: tensor data would start at byte ", data_start,
                   ", past the end of the file (", size, " bytes)");
  }

  struct Extent {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Extent> extents;
  for (size_t i = 0; i < infos.size(); ++i) {
    TensorInfo& info = infos[i];
    if (info.offset % alignment != 0) {
      return Invalid(name, "tensor ", info.name, " has offset ", info.offset,
                     ", which is not a multiple of the alignment ", alignment);
    }
    if (info.offset > size - data_start) {
      return Invalid(name, "tensor ", info.name, " has offset ", info.offset,
                     ", past the end of the file (the data section has ", size - data_start,
                     " bytes): truncated or a bad offset");
    }
    const uint64_t begin = data_start + info.offset;
    absl::StatusOr<uint64_t> bytes =
        model->AddTensor(std::string(info.name), info.type, std::move(info.shape), data, begin);
    if (!bytes.ok()) return bytes.status();
    extents.push_back({begin, begin + *bytes, i});
  }
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < extents.size(); ++i) {
    if (extents[i - 1].end > extents[i].begin) {
      const Extent& a = extents[i - 1];
      const Extent& b = extents[i];
      return Invalid(name, "tensors ", infos[a.index].name, " (bytes ", a.begin, " to ", a.end,
                     ") and ", infos[b.index].name, " (bytes ", b.begin, " to ", b.end,
                     ") overlap");
    }
  }

  GGUF_RETURN_IF_ERROR(ReadConfig(kv, *model, &model->mutable_config()));
  GGUF_ASSIGN_OR_RETURN(model->mutable_vocabulary(),
                        ReadVocabulary(kv, name, model->config().vocab_size));

  auto& metadata = model->mutable_metadata();
  metadata.emplace_back("gguf.version", Cat(version));
  metadata.emplace_back("gguf.tensor_count", Cat(tensor_count));
  metadata.emplace_back("gguf.kv_count", Cat(kv_count));
  metadata.emplace_back("gguf.alignment", Cat(alignment));
  metadata.emplace_back("gguf.data_offset", Cat(data_start));
  for (auto& entry : shown) metadata.push_back(std::move(entry));

  GGUF_RETURN_IF_ERROR(ValidateLlamaModel(*model));
  return model;
}

}  // namespace shardrun
