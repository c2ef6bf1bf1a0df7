// How hidden states (and logits) are encoded in a message's raw frames.
//
// f32: the floats as they are. f16: IEEE half, rounded to nearest even (bit for bit
// kernels/tensor_type.h's F32ToF16). q8_0: ggml's Q8_0 blocks of 32 values, an f16 scale and
// 32 int8 (bit for bit kernels/quantize.h's QuantizeRow), each row a whole number of blocks.
// Buffers need not be aligned: a transport's frames may start anywhere.
#ifndef SHARDRUN_PROTO_ACTIVATION_ENCODING_H_
#define SHARDRUN_PROTO_ACTIVATION_ENCODING_H_

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

// "f32", "f16", "q8_0"; "unknown" for a value outside the enum.
const char* ActivationTypeName(wire::ActivationType type);

// Bytes of `n` rows of `width` values; for q8_0 `width` must be a multiple of 32. 0 for a
// type outside the enum.
size_t EncodedActivationBytes(wire::ActivationType type, size_t n, size_t width);

// Writes `x` (for q8_0 a multiple of 32 values) to `out`, which holds
// EncodedActivationBytes(type, 1, x.size()) bytes.
void EncodeActivations(wire::ActivationType type, std::span<const float> x, uint8_t* out);

// Reads `out.size()` values from `data`, which must hold exactly their encoding
// (InvalidArgument otherwise).
absl::Status DecodeActivations(wire::ActivationType type, std::span<const uint8_t> data,
                               std::span<float> out);

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_ACTIVATION_ENCODING_H_
