// Key pairs: Ed25519 for signing tokens and proofs, Curve25519 for CurveZMQ transport
// encryption. Each key records the origin it belongs to, so that a key file cannot be used
// as another origin's key by mistake.
#ifndef SHARDRUN_AUTH_KEYS_H_
#define SHARDRUN_AUTH_KEYS_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace shardrun::auth {

inline constexpr size_t kSignPublicKeyBytes = 32;
inline constexpr size_t kSignSecretKeyBytes = 64;  // libsodium's form: seed + public key
inline constexpr size_t kSignatureBytes = 64;
inline constexpr size_t kCurveKeyBytes = 32;

using SignPublicKeyBytes = std::array<uint8_t, kSignPublicKeyBytes>;
using Signature = std::array<uint8_t, kSignatureBytes>;
using CurveKeyBytes = std::array<uint8_t, kCurveKeyBytes>;

struct SignPublicKey {
  std::string origin;
  SignPublicKeyBytes key{};

  // First 16 hex digits of the key, for logs and error messages.
  std::string Fingerprint() const;
};

struct SignKeyPair {
  std::string origin;
  SignPublicKeyBytes public_key{};
  std::array<uint8_t, kSignSecretKeyBytes> secret_key{};

  SignKeyPair() = default;
  SignKeyPair(const SignKeyPair&) = default;
  SignKeyPair& operator=(const SignKeyPair&) = default;
  ~SignKeyPair();  // wipes the secret

  SignPublicKey Public() const { return {origin, public_key}; }
  std::span<const uint8_t, 32> Seed() const { return std::span(secret_key).first<32>(); }
  Signature Sign(std::span<const uint8_t> message) const;
};

struct CurvePublicKey {
  std::string origin;
  CurveKeyBytes key{};

  std::string Z85() const;  // the text form ZeroMQ takes
};

struct CurveKeyPair {
  std::string origin;
  CurveKeyBytes public_key{};
  CurveKeyBytes secret_key{};

  CurveKeyPair() = default;
  CurveKeyPair(const CurveKeyPair&) = default;
  CurveKeyPair& operator=(const CurveKeyPair&) = default;
  ~CurveKeyPair();  // wipes the secret

  CurvePublicKey Public() const { return {origin, public_key}; }
};

// Fresh random key pairs (libsodium). The origin is recorded as given; callers validate it.
SignKeyPair GenerateSignKeyPair(const std::string& origin);
CurveKeyPair GenerateCurveKeyPair(const std::string& origin);

// Whether `signature` is `key`'s Ed25519 signature of `message` (libsodium refuses
// non-canonical signatures, so a valid signature has no second valid form).
bool VerifySignature(std::span<const uint8_t, kSignPublicKeyBytes> key,
                     std::span<const uint8_t> message, std::span<const uint8_t> signature);

// The pair whose secret key starts with `seed` (what key files store).
SignKeyPair SignKeyPairFromSeed(const std::string& origin, std::span<const uint8_t, 32> seed);
// Whether the secret half derives the public half (a key file could have been edited).
bool CurveKeyPairConsistent(const CurveKeyPair& pair);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_KEYS_H_
