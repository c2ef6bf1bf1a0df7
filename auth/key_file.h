// Key files: small text files that name their kind and origin, so that `shardrun` can refuse
// a public key where a secret one belongs, or a key of another origin.
//
//   # shardrun key file (Ed25519 signing key pair). Keep this file private.
//   kind: sign-secret
//   origin: https://a.example
//   public: <64 hex digits>
//   secret: <64 hex digits: the Ed25519 seed>
//
// Kinds: sign-secret / sign-public (Ed25519, hex) and curve-secret / curve-public
// (Curve25519, Z85 as ZeroMQ takes them). Public files carry no `secret` line. Every file is
// written with mode 0600 through a temporary file, so a crash never leaves half a key; a
// secret file readable by anyone else is refused on load, as ssh does.
#ifndef SHARDRUN_AUTH_KEY_FILE_H_
#define SHARDRUN_AUTH_KEY_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/keys.h"

namespace shardrun::auth {

// The four files `shardrun keygen --out DIR` writes.
struct KeyDirectory {
  std::string sign_secret;   // DIR/sign.key
  std::string sign_public;   // DIR/sign.pub
  std::string curve_secret;  // DIR/curve.key
  std::string curve_public;  // DIR/curve.pub
};
KeyDirectory KeyPaths(const std::string& dir);

// Writes all four files into `dir` (created with mode 0700 when missing). Unless `overwrite`,
// fails without writing anything when any of them exists.
absl::Status WriteKeyDirectory(const std::string& dir, const SignKeyPair& sign,
                               const CurveKeyPair& curve, bool overwrite);

absl::Status WriteSignSecretKey(const std::string& path, const SignKeyPair& pair, bool overwrite);
absl::Status WriteSignPublicKey(const std::string& path, const SignPublicKey& key, bool overwrite);
absl::Status WriteCurveSecretKey(const std::string& path, const CurveKeyPair& pair, bool overwrite);
absl::Status WriteCurvePublicKey(const std::string& path, const CurvePublicKey& key,
                                 bool overwrite);

// Each checks the kind, the origin's form, the key lengths and, for secret files, that the
// secret derives the public key and that the file is private to its owner.
absl::StatusOr<SignKeyPair> LoadSignSecretKey(const std::string& path);
absl::StatusOr<SignPublicKey> LoadSignPublicKey(const std::string& path);
absl::StatusOr<CurveKeyPair> LoadCurveSecretKey(const std::string& path);
absl::StatusOr<CurvePublicKey> LoadCurvePublicKey(const std::string& path);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_KEY_FILE_H_
