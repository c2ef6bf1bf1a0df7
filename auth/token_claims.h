// What a token says, as C++ values: who issued it to whom, for which cluster and model, what
// it allows and when. ClaimsFromPayload is the single place that checks a payload's
// structure (sizes, origins, known permissions, canonical scope, a non-empty lifetime), so
// every later check can rely on well-formed values.
#ifndef SHARDRUN_AUTH_TOKEN_CLAIMS_H_
#define SHARDRUN_AUTH_TOKEN_CLAIMS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "auth/keys.h"
#include "auth/permission.h"
#include "auth/scope.h"
#include "model/content_hash.h"
#include "proto/auth.pb.h"

namespace shardrun::auth {

inline constexpr uint32_t kTokenFormatVersion = 1;
inline constexpr size_t kTokenIdBytes = 16;
inline constexpr size_t kMaxAudienceBytes = 256;

using TokenId = std::array<uint8_t, kTokenIdBytes>;

struct TokenClaims {
  std::string issuer_origin;
  SignPublicKeyBytes issuer_key{};
  std::string subject_origin;
  SignPublicKeyBytes subject_key{};
  std::optional<CurveKeyBytes> subject_curve_key;  // none: any key the proof names
  std::string audience;                            // empty: any cluster
  Sha256 model_hash{};
  PermissionSet permissions;
  ShardScope scope;
  int64_t not_before = 0;  // Unix seconds
  int64_t expires_at = 0;  // Unix seconds, exclusive
  TokenId token_id{};

  std::string TokenIdHex() const;
};

// Checks the payload's structure; InvalidArgument naming the first problem.
absl::StatusOr<TokenClaims> ClaimsFromPayload(const wire::TokenPayload& payload);
wire::TokenPayload ClaimsToPayload(const TokenClaims& claims);

// OK for 1..256 printable ASCII characters without spaces.
absl::Status ValidateAudience(std::string_view audience);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_TOKEN_CLAIMS_H_
