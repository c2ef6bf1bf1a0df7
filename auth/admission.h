// The coordinator's side of the hello handshake for peers of another origin:
//
//   peer -> Hello
//   coordinator: IssueChallenge(peer) -> Challenge (fresh nonce, coordinator identity)
//   peer -> Proof (token + signature over the transcript of auth/proof.h)
//   coordinator: Admit(peer, HelloDigest(hello), proof, use, connection key) -> AdmittedPeer
//
// Admit accepts a proof only when the nonce is one it issued to this peer, unexpired and
// unused (each nonce is consumed by its first answer, right or wrong), the token verifies
// (auth/token_verifier.h), the proof names the transport key the connection really uses and
// any key the token pins, and the signature is by the token's subject key. An admitted
// peer's transport key joins the allow list (if one is set) until its token expires.
//
// Peers of the coordinator's own origin need no token: their transport keys are the
// operator's (--allow-keys), and AdmitListedKey admits them with every permission.
#ifndef SHARDRUN_AUTH_ADMISSION_H_
#define SHARDRUN_AUTH_ADMISSION_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/key_allow_list.h"
#include "auth/keys.h"
#include "auth/permission.h"
#include "auth/scope.h"
#include "auth/token_verifier.h"
#include "model/content_hash.h"
#include "proto/auth.pb.h"

namespace shardrun::auth {

// Who a peer is once admitted, and what it may do.
struct AdmittedPeer {
  std::string origin;
  PermissionSet permissions;
  ShardScope scope;  // what the partitioner may place on it (clipped to the model)
  std::optional<CurveKeyBytes> curve_key;         // its transport key; none without CURVE
  std::string token_id;                           // hex; empty for an operator-listed key
  std::chrono::system_clock::time_point expires;  // when its token expires (max(): never)

  std::string ToString() const;  // for logs
};

struct AdmissionOptions {
  std::string coordinator_origin;
  std::optional<CurveKeyBytes> coordinator_curve_key;  // none without CURVE
  std::chrono::milliseconds challenge_ttl{30000};      // a proof must answer within this
  size_t max_pending_challenges = 1024;                // bounds what unadmitted peers cost
  // Operator-listed transport keys (--allow-keys) with their origins: admitted without a
  // token by AdmitListedKey.
  std::vector<CurvePublicKey> listed_keys;
  // Where admitted transport keys go (the ZAP handler's list); optional.
  std::shared_ptr<KeyAllowList> allow_list;
  // Fills a nonce; libsodium's CSPRNG when unset. Fixed only by the proof fuzzer, which needs
  // a proof it can sign ahead of time.
  std::function<void(std::span<uint8_t>)> nonce_source;
};

class Admission {
 public:
  // `verifier` must outlive the admission; its clock times the challenges too.
  Admission(AdmissionOptions options, const TokenVerifier* verifier);

  // A fresh challenge for the connection `peer` (its ROUTER routing id), replacing any earlier
  // one of that peer. ResourceExhausted when too many challenges are unanswered.
  absl::StatusOr<wire::Challenge> IssueChallenge(std::string_view peer);

  // Checks `proof` from `peer`, whose Hello hashed to `hello_digest`, for `use`;
  // `connection_key` is the transport key the connection authenticated with (the ZAP User-Id,
  // auth/curve.h PeerCurveKey), none without CURVE. Each refusal names its reason.
  absl::StatusOr<AdmittedPeer> Admit(std::string_view peer, const Sha256& hello_digest,
                                     const wire::Proof& proof, const TokenUse& use,
                                     const std::optional<CurveKeyBytes>& connection_key);

  // A peer whose transport key the operator listed: NotFound when it is not listed.
  absl::StatusOr<AdmittedPeer> AdmitListedKey(const CurveKeyBytes& connection_key) const;
  // Replaces the listed keys (the operator edited --allow-keys).
  void SetListedKeys(std::vector<CurvePublicKey> keys);

  // Drops the pending challenge of a peer that went away.
  void Forget(std::string_view peer);

  size_t pending() const;
  uint64_t admitted() const;
  uint64_t refused() const;

 private:
  struct Pending {
    std::string peer;
    std::chrono::system_clock::time_point expires;
  };
  absl::StatusOr<AdmittedPeer> AdmitLocked(std::string_view peer, const Sha256& hello_digest,
                                           const wire::Proof& proof, const TokenUse& use,
                                           const std::optional<CurveKeyBytes>& connection_key);
  void PurgeLocked(std::chrono::system_clock::time_point now);

  const AdmissionOptions options_;
  const TokenVerifier* verifier_;
  mutable std::mutex mutex_;
  std::vector<CurvePublicKey> listed_keys_;  // options_.listed_keys, as last set
  std::map<std::string, Pending> pending_;   // nonce -> challenge
  std::map<std::string, std::string, std::less<>> nonce_of_peer_;
  // Answered nonces until their challenge would have expired: a replay within that time is
  // named as one; after it, the nonce is simply unknown.
  std::map<std::string, std::chrono::system_clock::time_point> used_;
  uint64_t admitted_ = 0;
  uint64_t refused_ = 0;
};

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_ADMISSION_H_
