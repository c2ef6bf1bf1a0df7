#include "kernels/cpu/aligned_storage.h"

#include <cstring>

namespace shardrun {

void* AlignedStorage::Reserve(size_t bytes) {
  if (bytes <= capacity_ && data_) return data_.get();
  // aligned_alloc wants a multiple of the alignment; one spare line lets SIMD code read a
  // little past the end of the last row.
  const size_t size = (bytes + 2 * kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, size);
  if (p == nullptr) return nullptr;  // the old storage stays
  std::memset(p, 0, size);
  data_.reset(p);
  capacity_ = bytes;
  return p;
}

}  // namespace shardrun
