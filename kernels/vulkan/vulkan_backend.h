// The Vulkan backend: weights, activations and KV caches in device memory, the llama
// operations as compute shaders (shaders/*.comp), recorded into one command buffer and
// submitted only when the host needs data (Read, Synchronize), so a whole forward pass runs
// without a host round trip between layers.
//
// Numerics follow the CPU backend: activations are rounded to F16 before products with F16
// weights and quantized to Q8_0 blocks (llama.cpp's rounding) before products with Q8_0 and
// Q4_0 weights; sums are accumulated in a different order, so results agree to float
// rounding (see tests/vulkan_backend_test.cc for the tolerances).
//
// Weight types without a shader (BF16, kQ8Group) run their MatMul and Embed on an internal
// CPU backend: the activations are read back, computed on the host and written back (logged
// once per type). Norm gains of any type are kept as float32 on the device.
//
// Device limits are respected: a weight larger than maxStorageBufferRange is split by rows
// into several buffers and operations over long activations are split into several
// dispatches; grids beyond maxComputeWorkGroupCount[0] become two-dimensional.
//
// Device loss and allocation failures never abort: Allocate and LoadWeight return them, and
// an operation that fails leaves the backend failed, which Synchronize reports (Read then
// yields zeros). They are device failures (kernels/device_failure.h) naming the device. A
// DeviceBuffer or DeviceWeight must not outlive its backend.
#ifndef SHARDRUN_KERNELS_VULKAN_VULKAN_BACKEND_H_
#define SHARDRUN_KERNELS_VULKAN_VULKAN_BACKEND_H_

#include <cstdint>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/vulkan/vulkan_buffer.h"
#include "kernels/vulkan/vulkan_context.h"
#include "kernels/vulkan/vulkan_pipelines.h"
#include "kernels/vulkan/vulkan_recorder.h"

namespace shardrun {

struct VulkanBackendOptions {
  int device_index = -1;    // -1: the best device (vulkan_context.h)
  bool validation = false;  // Khronos validation layer (also SHARDRUN_VK_VALIDATION=1)
  int cpu_threads = 1;      // threads of the CPU backend that runs unsupported weight types
  // The most bytes one storage binding may span; 0 = the device's maxStorageBufferRange.
  // Smaller values (or SHARDRUN_VK_MAX_BINDING_BYTES) exercise the split paths in tests.
  uint64_t max_binding_bytes = 0;
};

class VulkanBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<VulkanBackend>> Create(const VulkanBackendOptions& options);
  ~VulkanBackend() override;

  std::string name() const override;
  const VulkanContext& context() const { return *context_; }
  int validation_errors() const { return context_->validation_errors(); }
  bool validation_enabled() const { return context_->validation_enabled(); }
  bool pipeline_cache_warm() const { return pipelines_->warm(); }
  const std::string& pipeline_cache_path() const { return pipelines_->cache_path(); }
  uint64_t max_binding_bytes() const { return stream_->max_binding_bytes(); }
  // Testing (worker/fault_injection.h): the device fails from now on as `fault` says.
  void InjectFault(VulkanFault fault) { context_->InjectFault(fault); }

  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t floats) override;
  absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadWeight(const TensorView& view) override;
  void Write(DeviceBuffer& dst, int64_t offset, std::span<const float> src) override;
  void Read(const DeviceBuffer& src, int64_t offset, std::span<float> dst) override;
  absl::Status Synchronize() override;

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
  class Buffer;
  class Weight;

  VulkanBackend() = default;
  static const GpuBuffer& Gpu(const DeviceBuffer& buffer);
  // `status` with this backend's device named when it is a device failure.
  absl::Status Named(absl::Status status) const;
  // A device scratch buffer of at least `bytes`, grown (the old one retired) when needed;
  // nullptr after a failure.
  const GpuBuffer* Scratch(std::unique_ptr<GpuBuffer>& slot, uint64_t bytes);
  // Tokens per dispatch so that every per-token range in `bytes_per_token` fits one binding.
  int TokensPerChunk(std::initializer_list<uint64_t> bytes_per_token, int n) const;
  // Elements per dispatch of the element-wise kernels.
  int64_t ElementsPerChunk() const;
  // MatMul / Embed of a weight type without a shader, on the CPU backend.
  void CpuMatMul(DeviceBuffer& out, const Weight& w, const DeviceBuffer& in, int n);
  void CpuEmbed(DeviceBuffer& out, const Weight& w, std::span<const int32_t> tokens);
  // Host copies of CPU-backend buffers of at least `floats`, grown when needed.
  DeviceBuffer* CpuScratch(std::unique_ptr<DeviceBuffer>& slot, int64_t floats);
  void AddScaledChunks(DeviceBuffer& acc, int64_t acc_offset, const DeviceBuffer& x, int64_t count,
                       float scale);

  std::unique_ptr<VulkanContext> context_;
  std::unique_ptr<Pipelines> pipelines_;
  std::unique_ptr<CommandStream> stream_;
  std::unique_ptr<CpuBackend> cpu_;
  // Device scratch: quantized activations and their scales, token ids, rope table, copies.
  std::unique_ptr<GpuBuffer> act_q_;
  std::unique_ptr<GpuBuffer> act_d_;
  std::unique_ptr<GpuBuffer> tokens_;
  std::unique_ptr<GpuBuffer> rope_table_;
  std::unique_ptr<GpuBuffer> copy_scratch_;
  // What act_q_ holds (to quantize an input once for the q, k and v products).
  const void* quantized_buffer_ = nullptr;
  uint64_t quantized_version_ = 0;
  int64_t quantized_floats_ = -1;
  // What rope_table_ holds.
  struct RopeKey {
    int n = 0, head_size = 0, pos0 = -1;
    float freq_base = 0.0f;
  } rope_key_;
  std::vector<float> rope_host_;
  // Host side of the CPU fallback.
  std::unique_ptr<DeviceBuffer> cpu_in_;
  std::unique_ptr<DeviceBuffer> cpu_out_;
  std::vector<float> host_;
  std::set<TensorType> fallback_logged_;
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_VULKAN_BACKEND_H_
