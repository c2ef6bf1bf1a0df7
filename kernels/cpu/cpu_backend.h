// The CPU backend: host memory, SIMD kernels chosen at run time (cpu_level.h) and a thread
// pool spreading each operation over `threads` threads (the caller included).
//
// Weights are used in place in the mapped model file, except matrices of the types a level's
// kernels want tiled (AVX-512: Q4_0, Q8_0 with VNNI, F32/F16/BF16; AVX2: Q4_0): LoadWeight
// copies those once, into huge pages, in a row-interleaved layout (weight_tiles.h) that the
// kernels read as one sequential stream; Embed still reads the file. Operations run
// synchronously on the calling thread and its pool; one thread at a time may drive a backend
// (they share scratch buffers).
#ifndef SHARDRUN_KERNELS_CPU_CPU_BACKEND_H_
#define SHARDRUN_KERNELS_CPU_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/aligned_storage.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/cpu_level.h"
#include "kernels/cpu/thread_pool.h"

namespace shardrun {

class CpuBackend final : public Backend {
 public:
  // `threads` >= 1. The kernel level is SHARDRUN_CPU_LEVEL's when set, else the best the
  // CPU supports.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(int threads);
  // With an explicit level, which the CPU must support.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(int threads, CpuLevel level);

  std::string name() const override;
  CpuLevel level() const { return level_; }
  int threads() const { return pool_.threads(); }

  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t floats) override;
  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadWeight(const TensorView& view) override;
  void Write(DeviceBuffer& dst, int64_t offset, std::span<const float> src) override;
  void Read(const DeviceBuffer& src, int64_t offset, std::span<float> dst) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  void Embed(DeviceBuffer& out, const DeviceWeight& table,
             std::span<const int32_t> tokens) override;
  void RmsNorm(DeviceBuffer& out, const DeviceBuffer& in, const DeviceWeight& gain, int n,
               float eps) override;
  void MatMul(DeviceBuffer& out, const DeviceWeight& w, const DeviceBuffer& in, int n) override;
  void Rope(DeviceBuffer& x, int n, int n_heads, int head_size, int pos0, float freq_base) override;
  void Attention(DeviceBuffer& out, const DeviceBuffer& q, const DeviceBuffer& k,
                 const DeviceBuffer& v, DeviceBuffer& k_cache, DeviceBuffer& v_cache,
                 const AttentionShape& shape) override;
  void SwiGlu(DeviceBuffer& gate, const DeviceBuffer& up, int64_t count) override;
  void Add(DeviceBuffer& acc, const DeviceBuffer& x, int64_t count) override;
  void AddScaled(DeviceBuffer& acc, int64_t acc_offset, const DeviceBuffer& x, int64_t count,
                 float scale) override;
  void Zero(DeviceBuffer& buffer, int64_t count) override;
  void Copy(DeviceBuffer& dst, int64_t dst_offset, const DeviceBuffer& src, int64_t src_offset,
            int64_t count) override;

 private:
  class Weight;

  CpuBackend(int threads, CpuLevel level);
  // Brings the n activation rows `in` into the form w's kernel reads (in scratch) and points
  // `args` at them.
  void PrepareActivations(const Weight& w, const float* in, int n, MatMulArgs& args);
  // Scratch of `count` T per thread, rows on separate cache lines `*stride` T apart.
  template <typename T>
  T* PerThreadScratch(AlignedStorage& storage, int64_t count, int64_t* stride);

  const CpuLevel level_;
  const CpuKernels& kernels_;
  ThreadPool pool_;
  // Scratch, grown to the largest size seen and then reused: no allocation per call.
  AlignedStorage acts_;        // rounded or quantized activations
  AlignedStorage act_scales_;  // their block or group scales
  AlignedStorage act_sums_;    // and the sums of their int8 blocks
  AlignedStorage scores_;      // attention scores, one row of context_length per thread
  AlignedStorage rope_;        // rope coefficients, one row per thread
  AlignedStorage gain_;        // a norm gain that is not stored as float32
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_CPU_BACKEND_H_
