// An opened model: hyperparameters, the tensor table and (if the file has one) the vocabulary.
//
// Opening maps the file and parses only its headers; tensor data is paged in when used.
// Every reader validates what it parses against the file size and the hyperparameters and
// returns a Status naming the file and the problem: no input file can crash the process.
#ifndef SHARDRUN_MODEL_MODEL_FILE_H_
#define SHARDRUN_MODEL_MODEL_FILE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "model/mapped_file.h"
#include "model/model_config.h"
#include "model/tensor_view.h"
#include "model/vocabulary.h"

namespace shardrun {

enum class ModelFormat {
  kGguf,
  kLlama2cLegacy,  // 7-int header, float32
  kLlama2cV1,      // export.py version 1: "ak42", float32
  kLlama2cV2,      // export.py version 2: "ak42", int8 groups
};
std::string_view ModelFormatName(ModelFormat format);

class ModelFile {
 public:
  // Detects the format from the first bytes and parses the headers.
  static absl::StatusOr<std::unique_ptr<ModelFile>> Open(const std::string& path);
  // Parses a model held in memory (used by the fuzzers); `bytes` must outlive the result.
  static absl::StatusOr<std::unique_ptr<ModelFile>> Parse(std::string_view name,
                                                          const uint8_t* data, size_t size);

  ModelFormat format() const { return format_; }
  const std::string& path() const { return path_; }
  const ModelConfig& config() const { return config_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // nullptr if the file holds no tensor of that name.
  const TensorView* Find(std::string_view name) const;
  // The vocabulary stored in the file (GGUF), if any.
  const std::optional<Vocabulary>& vocabulary() const { return vocabulary_; }
  // Format-specific facts for `shardrun inspect` ("gguf.version" -> "3", ...), in file order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  size_t file_size() const { return file_size_; }
  // The whole file, for content hashing and for streaming slices to workers without it.
  std::span<const uint8_t> bytes() const { return {file_data_, file_size_}; }

  // Used by the format readers to build the result.
  ModelFile(ModelFormat format, std::string path, size_t file_size)
      : format_(format), path_(std::move(path)), file_size_(file_size) {}
  ModelConfig& mutable_config() { return config_; }
  std::vector<TensorView>& mutable_tensors() { return tensors_; }
  std::optional<Vocabulary>& mutable_vocabulary() { return vocabulary_; }
  std::vector<std::pair<std::string, std::string>>& mutable_metadata() { return metadata_; }
  void set_mapping(std::unique_ptr<MappedFile> mapping) { mapping_ = std::move(mapping); }
  // Appends a tensor of `type` and `shape` (GGUF order) whose data starts at byte `offset` of
  // `file_data` (the whole file, file_size() bytes), after checking what the readers cannot
  // trust: every dimension positive, no overflow, rows of whole blocks, the data inside the
  // file and aligned for its type, the name not taken. A kQ8Group tensor's float scales (one
  // per `group_size` values) start at `scales_offset`. Returns the bytes it occupies in the
  // file (values plus scales).
  absl::StatusOr<uint64_t> AddTensor(std::string name, TensorType type, std::vector<int64_t> shape,
                                     const uint8_t* file_data, uint64_t offset, int group_size = 0,
                                     uint64_t scales_offset = 0);

 private:
  ModelFormat format_;
  std::string path_;
  size_t file_size_;
  const uint8_t* file_data_ = nullptr;  // set by Parse
  ModelConfig config_;
  std::vector<TensorView> tensors_;
  std::optional<Vocabulary> vocabulary_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::unique_ptr<MappedFile> mapping_;  // keeps tensor data alive
  // Tensor name -> index in tensors_, filled by AddTensor (Find falls back to a scan for
  // tensors appended through mutable_tensors()).
  absl::flat_hash_map<std::string, size_t> index_;
};

// Checks hyperparameters alone: positive and below sane bounds (so that products of them fit
// in 64 bits), heads dividing the embedding, an even head size, a consistent expert setup.
// `file` names the model in the message. The llama2.c readers call it before sizing the file.
absl::Status ValidateLlamaConfig(std::string_view file, const ModelConfig& config);

// Checks a parsed model for what the forward pass relies on: every llama tensor present with
// the shape the hyperparameters imply, supported types, sane hyperparameters. The readers
// call it last; it is exposed for tests.
absl::Status ValidateLlamaModel(const ModelFile& model);

// Tensor names, GGUF style.
std::string LayerTensorName(int layer, std::string_view suffix);  // "blk.L.<suffix>.weight"

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_MODEL_FILE_H_
