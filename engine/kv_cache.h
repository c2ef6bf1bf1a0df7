// Keys and values of every position a sequence has seen, for the layers of one slice.
//
// Lives in the backend's memory; one cache per sequence (pipeline mode runs several).
#ifndef SHARDRUN_ENGINE_KV_CACHE_H_
#define SHARDRUN_ENGINE_KV_CACHE_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model_slice.h"
#include "kernels/backend.h"

namespace shardrun {

class KvCache {
 public:
  // `context_length` positions of `kv_dim` floats for each layer in `layers`.
  static absl::StatusOr<KvCache> Create(Backend& backend, LayerRange layers, int context_length,
                                        int kv_dim);
  // Bytes one cache needs.
  static size_t BytesFor(LayerRange layers, int context_length, int kv_dim);

  DeviceBuffer& keys(int layer) { return *keys_[layer - layers_.begin]; }
  DeviceBuffer& values(int layer) { return *values_[layer - layers_.begin]; }
  int context_length() const { return context_length_; }
  LayerRange layers() const { return layers_; }

 private:
  LayerRange layers_;
  int context_length_ = 0;
  std::vector<std::unique_ptr<DeviceBuffer>> keys_;
  std::vector<std::unique_ptr<DeviceBuffer>> values_;
};

}  // namespace shardrun

#endif  // SHARDRUN_ENGINE_KV_CACHE_H_
