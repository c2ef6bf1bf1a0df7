#include "auth/keys.h"

#include <sodium.h>

#include "auth/encoding.h"

namespace shardrun::auth {

static_assert(crypto_sign_PUBLICKEYBYTES == kSignPublicKeyBytes);
static_assert(crypto_sign_SECRETKEYBYTES == kSignSecretKeyBytes);
static_assert(crypto_sign_BYTES == kSignatureBytes);
static_assert(crypto_box_PUBLICKEYBYTES == kCurveKeyBytes);
static_assert(crypto_box_SECRETKEYBYTES == kCurveKeyBytes);

namespace {

// sodium_init is idempotent and thread-safe; every entry point that draws randomness or
// verifies calls it first.
void InitSodium() {
  static const bool ok = sodium_init() >= 0;
  (void)ok;
}

}  // namespace

std::string SignPublicKey::Fingerprint() const {
  return HexEncode(std::span<const uint8_t>(key).first(8));
}

SignKeyPair::~SignKeyPair() { sodium_memzero(secret_key.data(), secret_key.size()); }

Signature SignKeyPair::Sign(std::span<const uint8_t> message) const {
  InitSodium();
  Signature signature;
  crypto_sign_detached(signature.data(), nullptr, message.data(), message.size(),
                       secret_key.data());
  return signature;
}

std::string CurvePublicKey::Z85() const { return Z85EncodeKey(key); }

CurveKeyPair::~CurveKeyPair() { sodium_memzero(secret_key.data(), secret_key.size()); }

SignKeyPair GenerateSignKeyPair(const std::string& origin) {
  InitSodium();
  SignKeyPair pair;
  pair.origin = origin;
  crypto_sign_keypair(pair.public_key.data(), pair.secret_key.data());
  return pair;
}

CurveKeyPair GenerateCurveKeyPair(const std::string& origin) {
  InitSodium();
  CurveKeyPair pair;
  pair.origin = origin;
  crypto_box_keypair(pair.public_key.data(), pair.secret_key.data());
  return pair;
}

bool VerifySignature(std::span<const uint8_t, kSignPublicKeyBytes> key,
                     std::span<const uint8_t> message, std::span<const uint8_t> signature) {
  InitSodium();
  if (signature.size() != kSignatureBytes) return false;
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(),
                                     key.data()) == 0;
}

SignKeyPair SignKeyPairFromSeed(const std::string& origin, std::span<const uint8_t, 32> seed) {
  InitSodium();
  SignKeyPair pair;
  pair.origin = origin;
  crypto_sign_seed_keypair(pair.public_key.data(), pair.secret_key.data(), seed.data());
  return pair;
}

bool CurveKeyPairConsistent(const CurveKeyPair& pair) {
  InitSodium();
  CurveKeyBytes derived;
  if (crypto_scalarmult_base(derived.data(), pair.secret_key.data()) != 0) return false;
  return sodium_memcmp(derived.data(), pair.public_key.data(), derived.size()) == 0;
}

}  // namespace shardrun::auth
