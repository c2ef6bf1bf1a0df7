// Issuing tokens: the model owner signs claims about a subject with its Ed25519 key.
#ifndef SHARDRUN_AUTH_TOKEN_ISSUER_H_
#define SHARDRUN_AUTH_TOKEN_ISSUER_H_

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "auth/keys.h"
#include "auth/permission.h"
#include "auth/scope.h"
#include "model/content_hash.h"

namespace shardrun::auth {

// A year and a day: a token outliving that is better replaced than revoked.
inline constexpr std::chrono::seconds kMaxTokenTtl{366 * 24 * 3600};

struct TokenRequest {
  std::string subject_origin;
  SignPublicKeyBytes subject_key{};
  std::optional<CurveKeyBytes> subject_curve_key;  // pins the transport key when set
  std::string audience;                            // empty: any cluster
  Sha256 model_hash{};
  PermissionSet permissions;
  ShardScope scope;  // default: the whole model
  std::chrono::system_clock::time_point not_before;
  std::chrono::seconds ttl{3600};
};

// The token's text form, with a fresh random token id. Fails on a request that would not
// verify anywhere (bad origin or audience, no permission, a TTL outside 1 s..kMaxTokenTtl).
absl::StatusOr<std::string> IssueToken(const SignKeyPair& issuer, const TokenRequest& request);

// "90s", "30m", "1h", "7d" (one number and one unit).
absl::StatusOr<std::chrono::seconds> ParseTtl(std::string_view text);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_TOKEN_ISSUER_H_
