// 64-byte-aligned heap storage that only ever grows: backend buffers, weight copies and
// kernel scratch. Large storage (2 MiB and more) is mapped directly in huge pages where the
// system allows them (see aligned_storage.cc).
#ifndef SHARDRUN_KERNELS_CPU_ALIGNED_STORAGE_H_
#define SHARDRUN_KERNELS_CPU_ALIGNED_STORAGE_H_

#include <cstddef>
#include <cstdlib>
#include <memory>

namespace shardrun {

class AlignedStorage {
 public:
  static constexpr size_t kAlignment = 64;  // a cache line, and one AVX-512 register

  AlignedStorage() = default;

  // Ensures room for `bytes` and returns the start, or nullptr when memory runs out. Growing
  // replaces the storage with a zero-filled one (the old contents are not kept): scratch is
  // rewritten before each use.
  void* Reserve(size_t bytes);
  template <typename T>
  T* Reserve(size_t count) {
    return static_cast<T*>(Reserve(count * sizeof(T)));
  }

  void* data() const { return data_.get(); }
  size_t capacity() const { return capacity_; }

 private:
  struct Free {
    size_t mapped;  // bytes mapped with mmap, or 0: from aligned_alloc (Free{} is 0)
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  size_t capacity_ = 0;
};

// `count` rounded up so that consecutive rows of it start on cache lines.
constexpr size_t PadToCacheLine(size_t count, size_t element_size) {
  const size_t per_line = AlignedStorage::kAlignment / element_size;
  return (count + per_line - 1) / per_line * per_line;
}

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_ALIGNED_STORAGE_H_
