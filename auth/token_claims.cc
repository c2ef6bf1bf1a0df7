#include "auth/token_claims.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/encoding.h"
#include "auth/origin.h"

namespace shardrun::auth {
namespace {

template <size_t N>
absl::Status CopyExact(const std::string& bytes, std::string_view field,
                       std::array<uint8_t, N>* out) {
  if (bytes.size() != N) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), " has ", bytes.size(), " bytes, expected ", N));
  }
  std::memcpy(out->data(), bytes.data(), N);
  return absl::OkStatus();
}

std::string AsString(std::span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

}  // namespace

std::string TokenClaims::TokenIdHex() const { return HexEncode(token_id); }

absl::Status ValidateAudience(std::string_view audience) {
  if (audience.empty() || audience.size() > kMaxAudienceBytes) {
    return absl::InvalidArgumentError("an audience has 1 to 256 characters");
  }
  for (char c : audience) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          "an audience holds only printable ASCII characters without spaces");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenClaims> ClaimsFromPayload(const wire::TokenPayload& p) {
  auto bad = [](const absl::Status& s) {
    return absl::InvalidArgumentError(absl::StrCat("token payload: ", std::string(s.message())));
  };
  if (p.format_version() != kTokenFormatVersion) {
    return bad(absl::InvalidArgumentError(absl::StrCat(
        "format version ", p.format_version(), ", this build reads ", kTokenFormatVersion)));
  }
  TokenClaims c;
  if (absl::Status s = ValidateOrigin(p.issuer_origin()); !s.ok()) return bad(s);
  c.issuer_origin = p.issuer_origin();
  if (absl::Status s = CopyExact(p.issuer_key(), "issuer key", &c.issuer_key); !s.ok()) {
    return bad(s);
  }
  if (absl::Status s = ValidateOrigin(p.subject_origin()); !s.ok()) return bad(s);
  c.subject_origin = p.subject_origin();
  if (absl::Status s = CopyExact(p.subject_key(), "subject key", &c.subject_key); !s.ok()) {
    return bad(s);
  }
  if (!p.subject_curve_key().empty()) {
    CurveKeyBytes key;
    if (absl::Status s = CopyExact(p.subject_curve_key(), "subject curve key", &key); !s.ok()) {
      return bad(s);
    }
    c.subject_curve_key = key;
  }
  if (!p.audience().empty()) {
    if (absl::Status s = ValidateAudience(p.audience()); !s.ok()) return bad(s);
    c.audience = p.audience();
  }
  if (absl::Status s = CopyExact(p.model_hash(), "model hash", &c.model_hash); !s.ok()) {
    return bad(s);
  }
  for (int raw : p.permissions()) {
    std::optional<Permission> perm;
    if (raw == wire::TOKEN_PERMISSION_HOST_SHARD) perm = Permission::kHostShard;
    if (raw == wire::TOKEN_PERMISSION_INFER) perm = Permission::kInfer;
    if (!perm) return bad(absl::InvalidArgumentError(absl::StrCat("unknown permission ", raw)));
    if (c.permissions.Has(*perm)) {
      return bad(absl::InvalidArgumentError("a permission is listed twice"));
    }
    c.permissions.Add(*perm);
  }
  if (c.permissions.empty()) return bad(absl::InvalidArgumentError("grants no permission"));
  if (p.has_scope()) {
    absl::StatusOr<ShardScope> scope = ScopeFromProto(p.scope());
    if (!scope.ok()) return bad(scope.status());
    if (scope->whole_model()) {
      return bad(absl::InvalidArgumentError("an empty scope message (leave it out instead)"));
    }
    c.scope = std::move(*scope);
  }
  c.not_before = p.not_before();
  c.expires_at = p.expires_at();
  if (c.not_before < 0 || c.expires_at <= c.not_before) {
    return bad(absl::InvalidArgumentError("empty or negative validity period"));
  }
  if (absl::Status s = CopyExact(p.token_id(), "token id", &c.token_id); !s.ok()) return bad(s);
  return c;
}

wire::TokenPayload ClaimsToPayload(const TokenClaims& c) {
  wire::TokenPayload p;
  p.set_format_version(kTokenFormatVersion);
  p.set_issuer_origin(c.issuer_origin);
  p.set_issuer_key(AsString(c.issuer_key));
  p.set_subject_origin(c.subject_origin);
  p.set_subject_key(AsString(c.subject_key));
  if (c.subject_curve_key) p.set_subject_curve_key(AsString(*c.subject_curve_key));
  p.set_audience(c.audience);
  p.set_model_hash(AsString(c.model_hash));
  for (Permission perm : {Permission::kHostShard, Permission::kInfer}) {
    if (!c.permissions.Has(perm)) continue;
    p.add_permissions(perm == Permission::kHostShard ? wire::TOKEN_PERMISSION_HOST_SHARD
                                                     : wire::TOKEN_PERMISSION_INFER);
  }
  if (!c.scope.whole_model()) ScopeToProto(c.scope, p.mutable_scope());
  p.set_not_before(c.not_before);
  p.set_expires_at(c.expires_at);
  p.set_token_id(AsString(c.token_id));
  return p;
}

}  // namespace shardrun::auth
