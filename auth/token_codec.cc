#include "auth/token_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/encoding.h"

namespace shardrun::auth {
namespace {

constexpr std::string_view kSigningDomain("shardrun token v1\0", 18);

absl::Status Malformed(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed token: ", why));
}

}  // namespace

std::string TokenSigningInput(std::string_view payload_bytes) {
  return absl::StrCat(std::string(kSigningDomain), std::string(payload_bytes));
}

std::string EncodeToken(std::string_view payload_bytes, const Signature& signature) {
  return absl::StrCat(std::string(kTokenPrefix), Base64UrlEncode(payload_bytes), ".",
                      Base64UrlEncode(std::string_view(
                          reinterpret_cast<const char*>(signature.data()), signature.size())));
}

absl::StatusOr<ParsedToken> ParseToken(std::string_view text) {
  if (text.size() > kMaxTokenTextBytes) {
    return Malformed(absl::StrCat(text.size(), " characters, at most ", kMaxTokenTextBytes));
  }
  if (!text.starts_with(kTokenPrefix)) {
    return Malformed("it does not start with \"srt1.\" (not a shardrun token, or another version)");
  }
  text.remove_prefix(kTokenPrefix.size());
  const size_t dot = text.find('.');
  if (dot == std::string_view::npos || text.find('.', dot + 1) != std::string_view::npos) {
    return Malformed("expected srt1.<payload>.<signature>");
  }
  ParsedToken token;
  absl::StatusOr<std::string> payload = Base64UrlDecode(text.substr(0, dot));
  if (!payload.ok()) return Malformed(absl::StrCat("payload: ", payload.status().message()));
  if (payload->empty() || payload->size() > kMaxTokenPayloadBytes) {
    return Malformed(absl::StrCat("payload of ", payload->size(), " bytes (1 to ",
                                  kMaxTokenPayloadBytes, " allowed)"));
  }
  absl::StatusOr<std::string> signature = Base64UrlDecode(text.substr(dot + 1));
  if (!signature.ok()) {
    return Malformed(absl::StrCat("signature: ", signature.status().message()));
  }
  if (signature->size() != kSignatureBytes) {
    return Malformed(
        absl::StrCat("signature of ", signature->size(), " bytes, expected ", kSignatureBytes));
  }
  std::memcpy(token.signature.data(), signature->data(), kSignatureBytes);

  wire::TokenPayload proto;
  if (!proto.ParseFromString(*payload)) return Malformed("payload is not a TokenPayload");
  absl::StatusOr<TokenClaims> claims = ClaimsFromPayload(proto);
  if (!claims.ok()) return Malformed(claims.status().message());
  // One set of claims has one encoding: unknown fields, repeated or reordered fields and
  // non-minimal varints are refused, so that what `token inspect` shows is all that was signed.
  std::string canonical;
  if (!ClaimsToPayload(*claims).SerializeToString(&canonical) || canonical != *payload) {
    return Malformed("payload is not in canonical form");
  }
  token.payload_bytes = std::move(*payload);
  token.claims = std::move(*claims);
  return token;
}

}  // namespace shardrun::auth
