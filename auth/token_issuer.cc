#include "auth/token_issuer.h"

#include <sodium.h>

#include "absl/strings/str_cat.h"
#include "auth/clock.h"
#include "auth/encoding.h"
#include "auth/origin.h"
#include "auth/token_claims.h"
#include "auth/token_codec.h"

namespace shardrun::auth {

absl::StatusOr<std::string> IssueToken(const SignKeyPair& issuer, const TokenRequest& request) {
  if (absl::Status s = ValidateOrigin(issuer.origin); !s.ok()) return s;
  if (absl::Status s = ValidateOrigin(request.subject_origin); !s.ok()) return s;
  if (!request.audience.empty()) {
    if (absl::Status s = ValidateAudience(request.audience); !s.ok()) return s;
  }
  if (request.permissions.empty()) {
    return absl::InvalidArgumentError("a token must grant host_shard, infer or both");
  }
  if (request.ttl < std::chrono::seconds(1) || request.ttl > kMaxTokenTtl) {
    return absl::InvalidArgumentError(
        absl::StrCat("token lifetime ", request.ttl.count(), " s is outside 1 s..366 days"));
  }
  TokenClaims claims;
  claims.issuer_origin = issuer.origin;
  claims.issuer_key = issuer.public_key;
  claims.subject_origin = request.subject_origin;
  claims.subject_key = request.subject_key;
  claims.subject_curve_key = request.subject_curve_key;
  claims.audience = request.audience;
  claims.model_hash = request.model_hash;
  claims.permissions = request.permissions;
  claims.scope = request.scope;
  claims.not_before = UnixSeconds(request.not_before);
  claims.expires_at = claims.not_before + request.ttl.count();
  if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
  randombytes_buf(claims.token_id.data(), claims.token_id.size());

  std::string payload;
  if (!ClaimsToPayload(claims).SerializeToString(&payload) ||
      payload.size() > kMaxTokenPayloadBytes) {
    return absl::InvalidArgumentError("the token's claims do not fit in a token");
  }
  // The issuer checks its own result, so that a token it hands out always parses.
  const Signature signature = issuer.Sign(AsBytes(TokenSigningInput(payload)));
  std::string text = EncodeToken(payload, signature);
  if (absl::StatusOr<ParsedToken> parsed = ParseToken(text); !parsed.ok()) {
    return parsed.status();
  }
  return text;
}

absl::StatusOr<std::chrono::seconds> ParseTtl(std::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "duration \"", std::string(text), "\": expected a number and s, m, h or d (\"1h\")"));
  };
  if (text.size() < 2 || text.size() > 12) return bad();
  int64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return bad();
  }
  const std::string_view digits = text.substr(0, text.size() - 1);
  int64_t count = 0;  // at most 11 digits: no overflow
  for (char c : digits) {
    if (c < '0' || c > '9') return bad();
    count = count * 10 + (c - '0');
  }
  if (count > kMaxTokenTtl.count()) return bad();
  return std::chrono::seconds(count * unit);
}

}  // namespace shardrun::auth
