// SHA-256 of model files and tensors: workers prove at registration that their model file is
// the coordinator's, and streamed weights are verified tensor by tensor.
#ifndef SHARDRUN_MODEL_CONTENT_HASH_H_
#define SHARDRUN_MODEL_CONTENT_HASH_H_

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace shardrun {

using Sha256 = std::array<uint8_t, 32>;

// Hash of `data`. `progress`, when set, is called every few hundred MiB with bytes done.
Sha256 HashBytes(std::span<const uint8_t> data,
                 const std::function<void(size_t done, size_t total)>& progress = nullptr);
std::string HexDigest(const Sha256& hash);    // 64 lowercase hex digits
std::string ShortDigest(const Sha256& hash);  // first 12 hex digits, for logs

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_CONTENT_HASH_H_
