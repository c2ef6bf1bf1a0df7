#include "auth/admission.h"

#include <sodium.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "auth/clock.h"
#include "auth/encoding.h"
#include "auth/proof.h"
#include "spdlog/spdlog.h"

namespace shardrun::auth {
namespace {

std::string KeyZ85(const std::optional<CurveKeyBytes>& key) {
  return key ? Z85EncodeKey(*key) : "(none)";
}

}  // namespace

std::string AdmittedPeer::ToString() const {
  return absl::StrCat(origin, " (", permissions.ToString(), ", ", scope.ToString(),
                      curve_key ? absl::StrCat(", key ", Z85EncodeKey(*curve_key)) : "",
                      token_id.empty() ? ", listed key" : absl::StrCat(", token ", token_id), ")");
}

Admission::Admission(AdmissionOptions options, const TokenVerifier* verifier)
    : options_(std::move(options)), verifier_(verifier), listed_keys_(options_.listed_keys) {}

absl::StatusOr<wire::Challenge> Admission::IssueChallenge(std::string_view peer) {
  const auto now = verifier_->Now();
  std::lock_guard<std::mutex> lock(mutex_);
  PurgeLocked(now);
  if (auto it = nonce_of_peer_.find(peer); it != nonce_of_peer_.end()) {
    pending_.erase(it->second);
    nonce_of_peer_.erase(it);
  }
  // Unanswered challenges and remembered nonces both cost memory; a flood of handshakes is
  // refused rather than allowed to grow them without bound.
  if (pending_.size() >= options_.max_pending_challenges ||
      used_.size() >= 8 * options_.max_pending_challenges) {
    return absl::ResourceExhaustedError(
        absl::StrCat(pending_.size(), " challenges unanswered and ", used_.size(),
                     " answered within their lifetime; refusing new peers until they expire"));
  }
  std::string nonce(kNonceBytes, '\0');
  auto bytes = std::span<uint8_t>(reinterpret_cast<uint8_t*>(nonce.data()), nonce.size());
  if (options_.nonce_source) {
    options_.nonce_source(bytes);
  } else {
    if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
    randombytes_buf(bytes.data(), bytes.size());
  }
  if (pending_.contains(nonce) || used_.contains(nonce)) {
    // Only a fixed nonce source can repeat itself; never hand out a nonce twice.
    return absl::InternalError("the nonce source repeated a nonce");
  }
  const auto expires = now + options_.challenge_ttl;
  pending_[nonce] = Pending{std::string(peer), expires};
  nonce_of_peer_[std::string(peer)] = nonce;

  wire::Challenge challenge;
  challenge.set_nonce(nonce);
  challenge.set_coordinator_origin(options_.coordinator_origin);
  if (options_.coordinator_curve_key) {
    challenge.set_coordinator_curve_key(std::string(
        reinterpret_cast<const char*>(options_.coordinator_curve_key->data()), kCurveKeyBytes));
  }
  challenge.set_expires_at_ms(UnixMillis(expires));
  return challenge;
}

absl::StatusOr<AdmittedPeer> Admission::Admit(std::string_view peer, const Sha256& hello_digest,
                                              const wire::Proof& proof, const TokenUse& use,
                                              const std::optional<CurveKeyBytes>& connection_key) {
  std::lock_guard<std::mutex> lock(mutex_);
  absl::StatusOr<AdmittedPeer> result = AdmitLocked(peer, hello_digest, proof, use, connection_key);
  PurgeLocked(verifier_->Now());
  if (result.ok()) {
    ++admitted_;
    spdlog::info("admitted peer {}: {}", std::string(peer), result->ToString());
    if (options_.allow_list && result->curve_key) {
      options_.allow_list->Add(*result->curve_key, result->origin, result->expires);
    }
  } else {
    ++refused_;
    spdlog::warn("refused peer {}: {}", std::string(peer), std::string(result.status().message()));
  }
  return result;
}

absl::StatusOr<AdmittedPeer> Admission::AdmitLocked(
    std::string_view peer, const Sha256& hello_digest, const wire::Proof& proof,
    const TokenUse& use, const std::optional<CurveKeyBytes>& connection_key) {
  // Expired challenges are purged after the lookup, not before, so that a late answer is
  // told its challenge expired rather than that its nonce is unknown.
  const auto now = verifier_->Now();
  const std::string& nonce = proof.nonce();
  if (nonce.size() != kNonceBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("proof nonce has ", nonce.size(), " bytes, expected ", kNonceBytes));
  }
  if (used_.contains(nonce)) {
    return absl::PermissionDeniedError("nonce already used: a replayed hello proof");
  }
  auto it = pending_.find(nonce);
  if (it == pending_.end()) {
    return absl::PermissionDeniedError(
        "nonce was not issued by this coordinator, or its challenge expired");
  }
  if (it->second.peer != peer) {
    return absl::PermissionDeniedError("nonce was issued to another connection");
  }
  // One answer per challenge, right or wrong: a peer cannot try again with the same nonce.
  const Pending challenge = it->second;
  pending_.erase(it);
  nonce_of_peer_.erase(challenge.peer);
  used_[nonce] = challenge.expires;
  if (now > challenge.expires) {
    return absl::PermissionDeniedError("challenge expired before the proof arrived");
  }

  std::optional<CurveKeyBytes> proof_key;
  if (!proof.curve_key().empty()) {
    if (proof.curve_key().size() != kCurveKeyBytes) {
      return absl::InvalidArgumentError("proof names a malformed transport key");
    }
    proof_key.emplace();
    std::memcpy(proof_key->data(), proof.curve_key().data(), kCurveKeyBytes);
  }
  if (connection_key && proof_key != connection_key) {
    return absl::PermissionDeniedError(absl::StrCat("proof names transport key ", KeyZ85(proof_key),
                                                    ", but the connection authenticated with ",
                                                    KeyZ85(connection_key)));
  }

  absl::StatusOr<ParsedToken> token = ParseToken(proof.token());
  if (!token.ok()) return token.status();
  absl::StatusOr<VerifiedToken> verified = verifier_->Verify(*token, use);
  if (!verified.ok()) return verified.status();
  const TokenClaims& claims = verified->claims;
  if (claims.subject_curve_key && claims.subject_curve_key != proof_key) {
    return absl::PermissionDeniedError(absl::StrCat("token binds transport key ",
                                                    KeyZ85(claims.subject_curve_key),
                                                    ", but the peer uses ", KeyZ85(proof_key)));
  }

  ProofContext context;
  context.nonce = nonce;
  context.hello_digest = hello_digest;
  context.coordinator_origin = options_.coordinator_origin;
  context.coordinator_curve_key = options_.coordinator_curve_key;
  context.peer_curve_key = proof_key;
  context.token = proof.token();
  if (!VerifySignature(claims.subject_key, AsBytes(ProofTranscript(context)),
                       AsBytes(proof.signature()))) {
    return absl::UnauthenticatedError(
        "proof signature does not verify with the token's subject key (the peer cannot prove "
        "it holds the key the token was issued to, or the proof belongs to another hello, "
        "coordinator or token)");
  }

  AdmittedPeer admitted;
  admitted.origin = claims.subject_origin;
  admitted.permissions = claims.permissions;
  admitted.scope = verified->scope;
  admitted.curve_key = proof_key;
  admitted.token_id = claims.TokenIdHex();
  admitted.expires = std::chrono::system_clock::time_point(std::chrono::seconds(claims.expires_at));
  return admitted;
}

void Admission::SetListedKeys(std::vector<CurvePublicKey> keys) {
  std::lock_guard<std::mutex> lock(mutex_);
  listed_keys_ = std::move(keys);
}

absl::StatusOr<AdmittedPeer> Admission::AdmitListedKey(const CurveKeyBytes& connection_key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const CurvePublicKey& listed : listed_keys_) {
    if (listed.key != connection_key) continue;
    AdmittedPeer admitted;
    admitted.origin = listed.origin;
    admitted.permissions.Add(Permission::kHostShard);
    admitted.permissions.Add(Permission::kInfer);
    admitted.curve_key = connection_key;
    admitted.expires = std::chrono::system_clock::time_point::max();
    return admitted;
  }
  return absl::NotFoundError(absl::StrCat("transport key ", Z85EncodeKey(connection_key),
                                          " is not listed (--allow-keys)"));
}

void Admission::Forget(std::string_view peer) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = nonce_of_peer_.find(peer); it != nonce_of_peer_.end()) {
    pending_.erase(it->second);
    nonce_of_peer_.erase(it);
  }
}

void Admission::PurgeLocked(std::chrono::system_clock::time_point now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now > it->second.expires) {
      nonce_of_peer_.erase(it->second.peer);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  std::erase_if(used_, [now](const auto& kv) { return now > kv.second; });
}

size_t Admission::pending() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pending_.size();
}

uint64_t Admission::admitted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return admitted_;
}

uint64_t Admission::refused() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return refused_;
}

}  // namespace shardrun::auth
