// Verifying tokens: the checks a coordinator makes before it lets a peer of another origin
// hold a shard or run inference. Every refusal names its reason, one per check:
//   malformed token: ...                  (InvalidArgument)
//   bad token signature ...               (Unauthenticated)
//   issuer key ... is not trusted         (PermissionDenied, also an issuer origin mismatch)
//   token not valid until ... (now ...)   (PermissionDenied)
//   token expired at ... (now ...)        (PermissionDenied)
//   token is for audience ...             (PermissionDenied)
//   token is for model ...                (PermissionDenied)
//   token grants ..., not ...             (PermissionDenied)
//   scope holds nothing: ...              (FailedPrecondition)
//   token ... is revoked ...              (PermissionDenied; Unavailable if the list is broken)
#ifndef SHARDRUN_AUTH_TOKEN_VERIFIER_H_
#define SHARDRUN_AUTH_TOKEN_VERIFIER_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/clock.h"
#include "auth/keys.h"
#include "auth/permission.h"
#include "auth/revocation_list.h"
#include "auth/scope.h"
#include "auth/token_claims.h"
#include "auth/token_codec.h"
#include "model/content_hash.h"

namespace shardrun::auth {

// What a cluster accepts (from --trust, the cluster's name and --revoked).
struct TrustPolicy {
  std::vector<SignPublicKey> trusted_issuers;
  // This cluster's name. Tokens naming an audience are refused unless it is this one; tokens
  // without an audience are valid for any cluster.
  std::string audience;
  std::chrono::seconds clock_skew{60};          // tolerated difference between issuer and verifier
  std::shared_ptr<RevocationList> revocations;  // optional
};

// The size of a model, to check that a token's scope holds a part of it.
struct ModelExtent {
  int n_layers = 0;
  int n_experts = 0;  // 0: dense
};

// What one use of a token needs.
struct TokenUse {
  std::optional<Sha256> model_hash;      // unset: any model (only `token verify` leaves it out)
  std::optional<Permission> permission;  // unset: any permission
  std::optional<ModelExtent> model;      // unset: the scope is not checked against a model
};

struct VerifiedToken {
  TokenClaims claims;
  ShardScope scope;  // the claims' scope, clipped to TokenUse::model when given
};

class TokenVerifier {
 public:
  explicit TokenVerifier(TrustPolicy policy, WallClock clock = SystemClock());

  absl::StatusOr<VerifiedToken> Verify(std::string_view token, const TokenUse& use) const;
  absl::StatusOr<VerifiedToken> Verify(const ParsedToken& token, const TokenUse& use) const;

  const TrustPolicy& policy() const { return policy_; }
  std::chrono::system_clock::time_point Now() const { return clock_(); }

 private:
  TrustPolicy policy_;
  WallClock clock_;
};

// "2024-05-01T12:00:00Z".
std::string FormatUnixTime(int64_t seconds);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_TOKEN_VERIFIER_H_
