#include "model/content_hash.h"

#include <sodium.h>

#include <algorithm>

namespace shardrun {

Sha256 HashBytes(std::span<const uint8_t> data,
                 const std::function<void(size_t done, size_t total)>& progress) {
  constexpr size_t kChunk = size_t{256} << 20;
  crypto_hash_sha256_state state;
  crypto_hash_sha256_init(&state);
  for (size_t done = 0; done < data.size();) {
    const size_t n = std::min(kChunk, data.size() - done);
    crypto_hash_sha256_update(&state, data.data() + done, n);
    done += n;
    if (progress) progress(done, data.size());
  }
  Sha256 hash;
  crypto_hash_sha256_final(&state, hash.data());
  return hash;
}

std::string HexDigest(const Sha256& hash) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (uint8_t b : hash) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

std::string ShortDigest(const Sha256& hash) { return HexDigest(hash).substr(0, 12); }

}  // namespace shardrun
