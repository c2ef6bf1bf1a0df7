// Reads llama2.c checkpoints: the legacy format (a 7-int header, float32 weights) and
// export.py's versions 1 (float32) and 2 (int8 weights in groups with float32 scales).
#ifndef SHARDRUN_MODEL_LLAMA2C_READER_H_
#define SHARDRUN_MODEL_LLAMA2C_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/model_file.h"

namespace shardrun {

// export.py writes struct.pack('I', 0x616b3432): the bytes "24ka" on disk.
inline constexpr uint32_t kLlama2cMagic = 0x616b3432;
inline constexpr size_t kLlama2cLegacyHeaderBytes = 7 * 4;
inline constexpr size_t kLlama2cHeaderBytes = 256;  // versions 1 and 2, zero padded

// Parses the llama2.c checkpoint held in `data` (`size` bytes): version 1 or 2 if it starts
// with kLlama2cMagic, else legacy. The file size must be exactly what the header implies.
// Tensor views point into `data`, which must outlive the result; `name` names the file in
// error messages.
absl::StatusOr<std::unique_ptr<ModelFile>> ReadLlama2c(std::string_view name, const uint8_t* data,
                                                       size_t size);

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_LLAMA2C_READER_H_
