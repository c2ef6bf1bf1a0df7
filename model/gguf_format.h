// Constants of the GGUF file format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md),
// shared by the reader and the writer.
#ifndef SHARDRUN_MODEL_GGUF_FORMAT_H_
#define SHARDRUN_MODEL_GGUF_FORMAT_H_

#include <cstdint>

namespace shardrun::gguf {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian uint32
inline constexpr uint32_t kDefaultAlignment = 32;

enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

}  // namespace shardrun::gguf

#endif  // SHARDRUN_MODEL_GGUF_FORMAT_H_
