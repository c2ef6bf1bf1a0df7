// The text form of a token: "srt1.<base64url payload>.<base64url signature>" (unpadded
// base64url, so a token fits in a URL, a header or a command line as it is).
//
// Parsing is strict and bounded: at most kMaxTokenTextBytes of text, exactly three parts,
// a 64-byte signature, and a payload that is the canonical encoding of well-formed claims
// (no unknown fields, no second encoding of the same claims). It does not check the
// signature: that is the verifier's job, which needs to know whom to trust.
#ifndef SHARDRUN_AUTH_TOKEN_CODEC_H_
#define SHARDRUN_AUTH_TOKEN_CODEC_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "auth/keys.h"
#include "auth/token_claims.h"

namespace shardrun::auth {

inline constexpr std::string_view kTokenPrefix = "srt1.";
inline constexpr size_t kMaxTokenPayloadBytes = 2048;
inline constexpr size_t kMaxTokenTextBytes = 4096;

struct ParsedToken {
  std::string payload_bytes;  // exactly as signed
  Signature signature{};
  TokenClaims claims;
};

// What the issuer signs: a domain-separation prefix, so that no other shardrun signature (a
// hello proof) can ever be taken for a token signature, followed by the payload bytes.
std::string TokenSigningInput(std::string_view payload_bytes);

std::string EncodeToken(std::string_view payload_bytes, const Signature& signature);

// InvalidArgument "malformed token: ..." naming the problem.
absl::StatusOr<ParsedToken> ParseToken(std::string_view text);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_TOKEN_CODEC_H_
