// Reads GGUF (versions 2 and 3) llama models: metadata, tensor table and vocabulary.
#ifndef SHARDRUN_MODEL_GGUF_READER_H_
#define SHARDRUN_MODEL_GGUF_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/model_file.h"

namespace shardrun {

// Parses the GGUF file held in `data` (`size` bytes, starting with the "GGUF" magic) and
// validates it as a llama model. Only headers are read: tensor views point into `data`, which
// must outlive the result. `name` names the file in error messages.
absl::StatusOr<std::unique_ptr<ModelFile>> ReadGguf(std::string_view name, const uint8_t* data,
                                                    size_t size);

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_GGUF_READER_H_
