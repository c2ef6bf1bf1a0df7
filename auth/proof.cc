#include "auth/proof.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/encoding.h"
#include "auth/token_codec.h"

namespace shardrun::auth {
namespace {

constexpr std::string_view kProofDomain("shardrun hello proof v1\0", 24);

void AppendField(std::string* out, std::string_view field) {
  const uint32_t n = static_cast<uint32_t>(field.size());
  const char length[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                          static_cast<char>((n >> 16) & 0xff), static_cast<char>(n >> 24)};
  out->append(length, 4);
  out->append(field);
}

std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::string_view KeyText(const std::optional<CurveKeyBytes>& key) {
  return key ? AsText(*key) : std::string_view();
}

std::optional<CurveKeyBytes> KeyFromBytes(const std::string& bytes) {
  if (bytes.size() != kCurveKeyBytes) return std::nullopt;
  CurveKeyBytes key;
  std::memcpy(key.data(), bytes.data(), key.size());
  return key;
}

}  // namespace

Sha256 HelloDigest(const wire::Hello& hello) {
  const std::string bytes = hello.SerializeAsString();
  return HashBytes(AsBytes(bytes));
}

std::string ProofTranscript(const ProofContext& c) {
  std::string out(kProofDomain);
  AppendField(&out, c.nonce);
  AppendField(&out, AsText(c.hello_digest));
  AppendField(&out, c.coordinator_origin);
  AppendField(&out, KeyText(c.coordinator_curve_key));
  AppendField(&out, KeyText(c.peer_curve_key));
  const Sha256 token_hash = HashBytes(AsBytes(c.token));
  AppendField(&out, AsText(token_hash));
  return out;
}

absl::StatusOr<wire::Proof> MakeProof(const wire::Challenge& challenge, const Sha256& hello_digest,
                                      std::string_view token, const SignKeyPair& subject,
                                      const std::optional<CurveKeyBytes>& coordinator_curve_key,
                                      const std::optional<CurveKeyBytes>& own_curve_key) {
  if (challenge.nonce().size() != kNonceBytes) {
    return absl::InvalidArgumentError(absl::StrCat("challenge nonce has ", challenge.nonce().size(),
                                                   " bytes, expected ", kNonceBytes));
  }
  const std::optional<CurveKeyBytes> named = KeyFromBytes(challenge.coordinator_curve_key());
  if (!challenge.coordinator_curve_key().empty() && !named) {
    return absl::InvalidArgumentError("challenge names a malformed coordinator key");
  }
  if (named != coordinator_curve_key) {
    return absl::FailedPreconditionError(
        absl::StrCat("the challenge names coordinator key ",
                     named ? Z85EncodeKey(*named) : "(none)", ", but this peer connected to ",
                     coordinator_curve_key ? Z85EncodeKey(*coordinator_curve_key) : "(no CURVE)"));
  }
  absl::StatusOr<ParsedToken> parsed = ParseToken(token);
  if (!parsed.ok()) return parsed.status();
  if (parsed->claims.subject_key != subject.public_key) {
    return absl::FailedPreconditionError(
        "the token was issued to another subject key than this peer's signing key");
  }
  if (parsed->claims.subject_curve_key && parsed->claims.subject_curve_key != own_curve_key) {
    return absl::FailedPreconditionError(
        "the token binds another transport (Curve) key than this peer's");
  }
  ProofContext context;
  context.nonce = challenge.nonce();
  context.hello_digest = hello_digest;
  context.coordinator_origin = challenge.coordinator_origin();
  context.coordinator_curve_key = coordinator_curve_key;
  context.peer_curve_key = own_curve_key;
  context.token = token;
  const Signature signature = subject.Sign(AsBytes(ProofTranscript(context)));

  wire::Proof proof;
  proof.set_token(std::string(token));
  proof.set_nonce(challenge.nonce());
  if (own_curve_key) proof.set_curve_key(std::string(AsText(*own_curve_key)));
  proof.set_signature(std::string(AsText(signature)));
  return proof;
}

}  // namespace shardrun::auth
