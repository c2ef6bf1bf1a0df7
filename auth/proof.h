// The proof of possession a peer of another origin gives at hello: a signature by its
// token's subject key over a transcript that binds the proof to one connection:
//
//   "shardrun hello proof v1\0" followed by, each as a 4-byte little-endian length and
//   its bytes: the coordinator's nonce, the SHA-256 of the peer's Hello, the coordinator's
//   origin, the coordinator's Curve25519 key (empty without CURVE), the peer's Curve25519
//   key (empty without CURVE) and the SHA-256 of the token text.
//
// A proof therefore cannot be replayed on another connection (fresh nonce, single use), to
// another coordinator (its identity), with another Hello (budget, model hash, endpoint) or
// with another token, and it names the transport key the coordinator then admits.
#ifndef SHARDRUN_AUTH_PROOF_H_
#define SHARDRUN_AUTH_PROOF_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "auth/keys.h"
#include "model/content_hash.h"
#include "proto/auth.pb.h"
#include "proto/shardrun.pb.h"

namespace shardrun::auth {

inline constexpr size_t kNonceBytes = 32;

// SHA-256 of the Hello's serialisation. Both sides hash the message object, not the bytes
// that travelled: protobuf writes known fields in field order and unknown ones after them,
// so the peer's Hello and the coordinator's parse of it hash alike.
Sha256 HelloDigest(const wire::Hello& hello);

struct ProofContext {
  std::string_view nonce;
  Sha256 hello_digest{};
  std::string_view coordinator_origin;
  std::optional<CurveKeyBytes> coordinator_curve_key;
  std::optional<CurveKeyBytes> peer_curve_key;
  std::string_view token;
};
std::string ProofTranscript(const ProofContext& context);

// Worker (or client) side: the answer to `challenge`. `coordinator_curve_key` is the server
// key this peer connected with (not the one the challenge names: the challenge could come from
// anyone who can reach the peer), and `own_curve_key` its own transport key. Fails when the
// challenge is malformed, names another coordinator key, or `token` was not issued to
// `subject`.
absl::StatusOr<wire::Proof> MakeProof(const wire::Challenge& challenge, const Sha256& hello_digest,
                                      std::string_view token, const SignKeyPair& subject,
                                      const std::optional<CurveKeyBytes>& coordinator_curve_key,
                                      const std::optional<CurveKeyBytes>& own_curve_key);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_PROOF_H_
