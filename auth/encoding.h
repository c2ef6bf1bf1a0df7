// Text encodings of binary values: hex (Ed25519 keys, token ids), base64url without padding
// (tokens) and Z85 (Curve25519 keys, the form ZeroMQ takes). Decoders are strict: any
// character outside the alphabet, a wrong length or trailing bits make them fail, so that one
// value has exactly one text form.
#ifndef SHARDRUN_AUTH_ENCODING_H_
#define SHARDRUN_AUTH_ENCODING_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace shardrun::auth {

std::string HexEncode(std::span<const uint8_t> bytes);  // lowercase
// Lowercase hex only (what HexEncode writes).
absl::StatusOr<std::string> HexDecode(std::string_view text);

std::string Base64UrlEncode(std::string_view bytes);  // no padding
absl::StatusOr<std::string> Base64UrlDecode(std::string_view text);

// Z85 (ZeroMQ RFC 32) of a 32-byte key: 40 characters.
std::string Z85EncodeKey(std::span<const uint8_t, 32> key);
absl::StatusOr<std::string> Z85DecodeKey(std::string_view text);  // 32 bytes

// View of a string's bytes as unsigned bytes.
inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_ENCODING_H_
