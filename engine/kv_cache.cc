#include "engine/kv_cache.h"

namespace shardrun {

absl::StatusOr<KvCache> KvCache::Create(Backend& backend, LayerRange layers, int context_length,
                                        int kv_dim) {
  KvCache cache;
  cache.layers_ = layers;
  cache.context_length_ = context_length;
  const int64_t floats = static_cast<int64_t>(context_length) * kv_dim;
  // A tensor-parallel member without attention heads keeps no cache.
  if (floats == 0) return cache;
  for (int l = layers.begin; l < layers.end; ++l) {
    auto k = backend.Allocate(floats);
    if (!k.ok()) return k.status();
    auto v = backend.Allocate(floats);
    if (!v.ok()) return v.status();
    cache.keys_.push_back(*std::move(k));
    cache.values_.push_back(*std::move(v));
  }
  return cache;
}

size_t KvCache::BytesFor(LayerRange layers, int context_length, int kv_dim) {
  return 2 * sizeof(float) * static_cast<size_t>(layers.size()) *
         static_cast<size_t>(context_length) * static_cast<size_t>(kv_dim);
}

}  // namespace shardrun
