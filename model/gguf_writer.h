// Writes GGUF v3 files (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
//
// Metadata is encoded as it is set (it is small: a 32000-token vocabulary is ~0.5 MiB), but
// tensor data is streamed: each tensor is declared with its type and shape up front (the
// header holds every tensor's offset) and its bytes are produced by a callback while the file
// is written, so a generator never holds a whole model in memory. The file is written to
// `path + ".tmp"` and renamed over `path` only when complete: a killed writer never leaves a
// truncated model behind under the real name.
#ifndef SHARDRUN_MODEL_GGUF_WRITER_H_
#define SHARDRUN_MODEL_GGUF_WRITER_H_

#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "kernels/tensor_type.h"
#include "model/gguf_format.h"

namespace shardrun {

// Receives one tensor's bytes, in order, during GgufWriter::Write.
class GgufTensorSink {
 public:
  // Appends `size` bytes; fails on an I/O error or when the tensor's declared size would be
  // exceeded.
  absl::Status Write(const void* data, size_t size);
  size_t remaining() const { return expected_ - written_; }

 private:
  friend class GgufWriter;
  GgufTensorSink(std::FILE* file, const std::string* path, const std::string* tensor,
                 size_t expected)
      : file_(file), path_(path), tensor_(tensor), expected_(expected) {}

  std::FILE* file_;
  const std::string* path_;    // for error messages
  const std::string* tensor_;  // for error messages
  size_t expected_;
  size_t written_ = 0;
};

class GgufWriter {
 public:
  // Produces a tensor's bytes: must write exactly the tensor's size to `sink`.
  using TensorDataFn = std::function<absl::Status(GgufTensorSink& sink)>;

  // `alignment` of tensor data: a power of two, at least 8 (ggml and the spec require it).
  // A value other than the default is recorded as `general.alignment` (uint32).
  explicit GgufWriter(uint32_t alignment = gguf::kDefaultAlignment) : alignment_(alignment) {}

  // Metadata, written in the order first set; setting a key again replaces its value in
  // place. Arrays of arrays are not supported (ggml cannot read them either).
  void SetUint8(std::string_view key, uint8_t value);
  void SetInt8(std::string_view key, int8_t value);
  void SetUint16(std::string_view key, uint16_t value);
  void SetInt16(std::string_view key, int16_t value);
  void SetUint32(std::string_view key, uint32_t value);
  void SetInt32(std::string_view key, int32_t value);
  void SetUint64(std::string_view key, uint64_t value);
  void SetInt64(std::string_view key, int64_t value);
  void SetFloat32(std::string_view key, float value);
  void SetFloat64(std::string_view key, double value);
  void SetBool(std::string_view key, bool value);
  void SetString(std::string_view key, std::string_view value);
  void SetArray(std::string_view key, std::span<const uint8_t> values);
  void SetArray(std::string_view key, std::span<const int8_t> values);
  void SetArray(std::string_view key, std::span<const uint16_t> values);
  void SetArray(std::string_view key, std::span<const int16_t> values);
  void SetArray(std::string_view key, std::span<const uint32_t> values);
  void SetArray(std::string_view key, std::span<const int32_t> values);
  void SetArray(std::string_view key, std::span<const uint64_t> values);
  void SetArray(std::string_view key, std::span<const int64_t> values);
  void SetArray(std::string_view key, std::span<const float> values);
  void SetArray(std::string_view key, std::span<const double> values);
  void SetArray(std::string_view key, const std::vector<bool>& values);
  void SetArray(std::string_view key, std::span<const std::string> values);

  // Declares a tensor. `shape` is in GGUF order (shape[0] contiguous), 1 to 4 positive
  // dimensions, shape[0] a multiple of the type's block size. Tensors are stored in the
  // order added; `data` is called once, in that order, from Write.
  absl::Status AddTensor(std::string name, TensorType type, std::vector<int64_t> shape,
                         TensorDataFn data);
  // Same, with the bytes already in memory (copied).
  absl::Status AddTensor(std::string name, TensorType type, std::vector<int64_t> shape,
                         std::span<const uint8_t> bytes);

  // Writes the file. Can be called more than once (each call runs the data callbacks again).
  absl::Status Write(const std::string& path) const;

  // Bytes of the whole file Write would produce.
  uint64_t FileSize() const;
  uint32_t alignment() const { return alignment_; }

 private:
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> shape;
    size_t bytes;
    uint64_t offset;  // from the start of the data section
    TensorDataFn data;
  };

  // Sets `key` to an encoded value: its type id, then its bytes.
  void SetEncoded(std::string_view key, std::string encoded_value);
  std::string EncodeHeader() const;
  absl::Status WriteTo(std::FILE* file, const std::string& path) const;

  uint32_t alignment_;
  std::vector<std::pair<std::string, std::string>> metadata_;  // key, encoded type + value
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  uint64_t data_bytes_ = 0;  // data section size so far, padded
};

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_GGUF_WRITER_H_
