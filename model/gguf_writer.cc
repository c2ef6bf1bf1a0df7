#include "model/gguf_writer.h"

#include <bit>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace shardrun {
namespace {

static_assert(std::endian::native == std::endian::little,
              "GGUF is little-endian; tensor bytes are written as they lie in memory");

constexpr uint32_t kVersion = 3;
// ggml's GGML_MAX_NAME (64) includes the terminating NUL.
constexpr size_t kMaxTensorName = 63;
constexpr int kMaxDims = 4;
constexpr std::string_view kAlignmentKey = "general.alignment";

// Debian's abseil has its own string_view type, which StrCat does not take std's for.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

uint64_t AlignUp(uint64_t n, uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

template <typename T>
void AppendRaw(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

void AppendString(std::string& out, std::string_view s) {
  AppendRaw<uint64_t>(out, s.size());
  out.append(s);
}

std::string EncodeScalarValue(gguf::ValueType type, auto value) {
  std::string out;
  AppendRaw<uint32_t>(out, static_cast<uint32_t>(type));
  AppendRaw(out, value);
  return out;
}

template <typename T>
std::string EncodeArray(gguf::ValueType element_type, std::span<const T> values) {
  std::string out;
  AppendRaw<uint32_t>(out, static_cast<uint32_t>(gguf::ValueType::kArray));
  AppendRaw<uint32_t>(out, static_cast<uint32_t>(element_type));
  AppendRaw<uint64_t>(out, values.size());
  out.reserve(out.size() + values.size_bytes());
  for (const T& v : values) AppendRaw(out, v);
  return out;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status IoError(std::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(path, ": ", Sv(what), ": ", std::strerror(errno)));
}

}  // namespace

absl::Status GgufTensorSink::Write(const void* data, size_t size) {
  if (size > expected_ - written_) {
    return absl::InternalError(absl::StrCat(*path_, ": tensor ", *tensor_,
                                            " produced more than its ", expected_, " bytes"));
  }
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    return IoError(absl::StrCat("writing tensor ", *tensor_), *path_);
  }
  written_ += size;
  return absl::OkStatus();
}

void GgufWriter::SetEncoded(std::string_view key, std::string encoded) {
  auto [it, inserted] = metadata_index_.emplace(std::string(key), metadata_.size());
  if (inserted) {
    metadata_.emplace_back(std::string(key), std::move(encoded));
  } else {
    metadata_[it->second].second = std::move(encoded);
  }
}

void GgufWriter::SetUint8(std::string_view key, uint8_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kUint8, value));
}
void GgufWriter::SetInt8(std::string_view key, int8_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kInt8, value));
}
void GgufWriter::SetUint16(std::string_view key, uint16_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kUint16, value));
}
void GgufWriter::SetInt16(std::string_view key, int16_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kInt16, value));
}
void GgufWriter::SetUint32(std::string_view key, uint32_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kUint32, value));
}
void GgufWriter::SetInt32(std::string_view key, int32_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kInt32, value));
}
void GgufWriter::SetUint64(std::string_view key, uint64_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kUint64, value));
}
void GgufWriter::SetInt64(std::string_view key, int64_t value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kInt64, value));
}
void GgufWriter::SetFloat32(std::string_view key, float value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kFloat32, value));
}
void GgufWriter::SetFloat64(std::string_view key, double value) {
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kFloat64, value));
}
void GgufWriter::SetBool(std::string_view key, bool value) {
  // GGUF stores a bool as one byte, 0 or 1.
  SetEncoded(key, EncodeScalarValue(gguf::ValueType::kBool, static_cast<uint8_t>(value ? 1 : 0)));
}
void GgufWriter::SetString(std::string_view key, std::string_view value) {
  std::string out;
  AppendRaw<uint32_t>(out, static_cast<uint32_t>(gguf::ValueType::kString));
  AppendString(out, value);
  SetEncoded(key, std::move(out));
}

void GgufWriter::SetArray(std::string_view key, std::span<const uint8_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kUint8, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const int8_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kInt8, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const uint16_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kUint16, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const int16_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kInt16, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const uint32_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kUint32, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const int32_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kInt32, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const uint64_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kUint64, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const int64_t> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kInt64, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const float> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kFloat32, values));
}
void GgufWriter::SetArray(std::string_view key, std::span<const double> values) {
  SetEncoded(key, EncodeArray(gguf::ValueType::kFloat64, values));
}
void GgufWriter::SetArray(std::string_view key, const std::vector<bool>& values) {
  std::vector<uint8_t> bytes(values.begin(), values.end());
  SetEncoded(key, EncodeArray(gguf::ValueType::kBool, std::span<const uint8_t>(bytes)));
}
void GgufWriter::SetArray(std::string_view key, std::span<const std::string> values) {
  std::string out;
  AppendRaw<uint32_t>(out, static_cast<uint32_t>(gguf::ValueType::kArray));
  AppendRaw<uint32_t>(out, static_cast<uint32_t>(gguf::ValueType::kString));
  AppendRaw<uint64_t>(out, values.size());
  for (const std::string& s : values) AppendString(out, s);
  SetEncoded(key, std::move(out));
}

absl::Status GgufWriter::AddTensor(std::string name, TensorType type, std::vector<int64_t> shape,
                                   TensorDataFn data) {
  if (name.empty() || name.size() > kMaxTensorName) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF tensor name \"", name, "\" must have 1 to ", kMaxTensorName, " bytes"));
  }
  if (tensor_index_.contains(name)) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF tensor ", name, " added twice"));
  }
  if (type == TensorType::kQ8Group) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF tensor ", name, ": type q8_group has no GGUF encoding"));
  }
  if (shape.empty() || shape.size() > kMaxDims) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF tensor ", name, ": shape ",
                                                   ShapeString(shape), " needs 1 to ", kMaxDims,
                                                   " dimensions"));
  }
  int64_t elements = 1;
  for (int64_t d : shape) {
    // The bound keeps elements * bytes-per-element far from overflowing.
    if (d <= 0 || d > (int64_t{1} << 40) / elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF tensor ", name, ": bad shape ", ShapeString(shape)));
    }
    elements *= d;
  }
  if (shape[0] % BlockElements(type) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF tensor ", name, ": rows of ", shape[0], " values cannot be stored as ",
                     Sv(TensorTypeName(type)), " (blocks of ", BlockElements(type), ")"));
  }
  const size_t bytes = TensorBytes(type, elements);
  const uint64_t offset = data_bytes_;
  data_bytes_ = AlignUp(offset + bytes, alignment_);
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(
      Tensor{std::move(name), type, std::move(shape), bytes, offset, std::move(data)});
  return absl::OkStatus();
}

absl::Status GgufWriter::AddTensor(std::string name, TensorType type, std::vector<int64_t> shape,
                                   std::span<const uint8_t> bytes) {
  auto copy = std::make_shared<std::vector<uint8_t>>(bytes.begin(), bytes.end());
  const std::string tensor_name = name;
  absl::Status status =
      AddTensor(std::move(name), type, std::move(shape),
                [copy](GgufTensorSink& sink) { return sink.Write(copy->data(), copy->size()); });
  if (!status.ok()) return status;
  const Tensor& added = tensors_.back();
  if (added.bytes != copy->size()) {
    // Undo, so a caller that handles the error keeps a consistent writer.
    data_bytes_ = added.offset;
    tensor_index_.erase(added.name);
    tensors_.pop_back();
    return absl::InvalidArgumentError(absl::StrCat("GGUF tensor ", tensor_name, ": got ",
                                                   copy->size(), " bytes, its type and shape need ",
                                                   added.bytes));
  }
  return absl::OkStatus();
}

std::string GgufWriter::EncodeHeader() const {
  std::string out;
  const bool custom_alignment = alignment_ != gguf::kDefaultAlignment;
  AppendRaw<uint32_t>(out, gguf::kMagic);
  AppendRaw<uint32_t>(out, kVersion);
  AppendRaw<uint64_t>(out, tensors_.size());
  AppendRaw<uint64_t>(out, metadata_.size() + (custom_alignment ? 1 : 0));
  for (const auto& [key, value] : metadata_) {
    AppendString(out, key);
    out.append(value);
  }
  if (custom_alignment) {
    AppendString(out, kAlignmentKey);
    out.append(EncodeScalarValue(gguf::ValueType::kUint32, alignment_));
  }
  for (const Tensor& t : tensors_) {
    AppendString(out, t.name);
    AppendRaw<uint32_t>(out, static_cast<uint32_t>(t.shape.size()));
    for (int64_t d : t.shape) AppendRaw<uint64_t>(out, static_cast<uint64_t>(d));
    AppendRaw<uint32_t>(out, GgmlTypeOf(t.type));
    AppendRaw<uint64_t>(out, t.offset);
  }
  return out;
}

uint64_t GgufWriter::FileSize() const {
  return AlignUp(EncodeHeader().size(), alignment_) + data_bytes_;
}

absl::Status GgufWriter::WriteTo(std::FILE* file, const std::string& path) const {
  std::string header = EncodeHeader();
  header.resize(AlignUp(header.size(), alignment_), '\0');
  if (std::fwrite(header.data(), 1, header.size(), file) != header.size()) {
    return IoError("writing the GGUF header", path);
  }
  const std::vector<char> padding(alignment_, '\0');
  for (const Tensor& t : tensors_) {
    GgufTensorSink sink(file, &path, &t.name, t.bytes);
    if (absl::Status status = t.data(sink); !status.ok()) return status;
    if (sink.remaining() != 0) {
      return absl::InternalError(absl::StrCat(path, ": tensor ", t.name, " produced ",
                                              t.bytes - sink.remaining(), " of its ", t.bytes,
                                              " bytes"));
    }
    // Every tensor, the last included, is padded to the alignment (as ggml writes them).
    const uint64_t end = t.offset + t.bytes;
    const uint64_t pad = AlignUp(end, alignment_) - end;
    if (pad > 0 && std::fwrite(padding.data(), 1, pad, file) != pad) {
      return IoError("writing tensor padding", path);
    }
  }
  if (std::fflush(file) != 0) return IoError("flushing", path);
  return absl::OkStatus();
}

absl::Status GgufWriter::Write(const std::string& path) const {
  if (alignment_ < 8 || !std::has_single_bit(alignment_)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": GGUF alignment ", alignment_,
                                                   " must be a power of two of at least 8"));
  }
  if (metadata_index_.contains(std::string(kAlignmentKey))) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": set ", Sv(kAlignmentKey), " through GgufWriter's constructor, not as metadata"));
  }
  const std::string tmp_path = path + ".tmp";
  std::FILE* file = std::fopen(tmp_path.c_str(), "wb");
  if (file == nullptr) return IoError("cannot create", tmp_path);
  absl::Status status = WriteTo(file, tmp_path);
  if (std::fclose(file) != 0 && status.ok()) status = IoError("closing", tmp_path);
  if (status.ok() && std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    status = IoError(absl::StrCat("renaming ", tmp_path, " to"), path);
  }
  if (!status.ok()) std::remove(tmp_path.c_str());
  return status;
}

}  // namespace shardrun
