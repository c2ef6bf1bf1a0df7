#include "auth/token_verifier.h"

#include <time.h>

#include "absl/strings/str_cat.h"
#include "auth/encoding.h"

namespace shardrun::auth {

std::string FormatUnixTime(int64_t seconds) {
  const time_t t = static_cast<time_t>(seconds);
  struct tm utc;
  char text[32];
  if (gmtime_r(&t, &utc) == nullptr ||
      strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc) == 0) {
    return absl::StrCat("@", seconds);
  }
  return text;
}

TokenVerifier::TokenVerifier(TrustPolicy policy, WallClock clock)
    : policy_(std::move(policy)), clock_(std::move(clock)) {}

absl::StatusOr<VerifiedToken> TokenVerifier::Verify(std::string_view token,
                                                    const TokenUse& use) const {
  absl::StatusOr<ParsedToken> parsed = ParseToken(token);
  if (!parsed.ok()) return parsed.status();
  return Verify(*parsed, use);
}

absl::StatusOr<VerifiedToken> TokenVerifier::Verify(const ParsedToken& token,
                                                    const TokenUse& use) const {
  const TokenClaims& c = token.claims;
  // The signature first, against the key the token names: nothing else it says is worth
  // reading until it is known to be that key's statement.
  if (!VerifySignature(c.issuer_key, AsBytes(TokenSigningInput(token.payload_bytes)),
                       token.signature)) {
    return absl::UnauthenticatedError(
        "bad token signature (the token was altered, or not signed by the issuer key it names)");
  }
  const SignPublicKey* trusted = nullptr;
  for (const SignPublicKey& k : policy_.trusted_issuers) {
    if (k.key == c.issuer_key) trusted = &k;
  }
  const std::string fingerprint = SignPublicKey{c.issuer_origin, c.issuer_key}.Fingerprint();
  if (trusted == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("issuer key ", fingerprint, " (origin ", c.issuer_origin, ") is not trusted"));
  }
  if (trusted->origin != c.issuer_origin) {
    return absl::PermissionDeniedError(
        absl::StrCat("issuer key ", fingerprint, " is trusted for origin ", trusted->origin,
                     ", but the token names origin ", c.issuer_origin));
  }

  const int64_t now = UnixSeconds(clock_());
  const int64_t skew = policy_.clock_skew.count();
  if (now + skew < c.not_before) {
    return absl::PermissionDeniedError(
        absl::StrCat("token not valid until ", FormatUnixTime(c.not_before), " (now ",
                     FormatUnixTime(now), ", clock skew allowed ", skew, " s)"));
  }
  if (now - skew >= c.expires_at) {
    return absl::PermissionDeniedError(absl::StrCat(
        "token expired at ", FormatUnixTime(c.expires_at), " (now ", FormatUnixTime(now), ")"));
  }

  if (!c.audience.empty() && c.audience != policy_.audience) {
    return absl::PermissionDeniedError(
        policy_.audience.empty()
            ? absl::StrCat("token is for audience \"", c.audience,
                           "\", and this cluster has no audience name to match it")
            : absl::StrCat("token is for audience \"", c.audience, "\", this cluster is \"",
                           policy_.audience, "\""));
  }
  if (use.model_hash && *use.model_hash != c.model_hash) {
    return absl::PermissionDeniedError(
        absl::StrCat("token is for model ", ShortDigest(c.model_hash), "..., this model is ",
                     ShortDigest(*use.model_hash), "..."));
  }
  if (use.permission && !c.permissions.Has(*use.permission)) {
    return absl::PermissionDeniedError(absl::StrCat("token grants ", c.permissions.ToString(),
                                                    ", not ",
                                                    std::string(PermissionName(*use.permission))));
  }
  VerifiedToken verified{c, c.scope};
  if (use.model) {
    absl::StatusOr<ShardScope> clipped =
        c.scope.ClipToModel(use.model->n_layers, use.model->n_experts);
    if (!clipped.ok()) return clipped.status();
    verified.scope = std::move(*clipped);
  }
  if (policy_.revocations) {
    if (absl::Status s = policy_.revocations->Check(c.token_id); !s.ok()) return s;
  }
  return verified;
}

}  // namespace shardrun::auth
