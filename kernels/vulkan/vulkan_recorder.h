// The command stream of the Vulkan backend: operations are recorded into one command buffer
// and submitted only when the host needs a result (Flush: Read, Synchronize, a full staging
// area, LoadWeight).
//
// Barriers go only between dependent commands: the stream remembers which buffers were read
// and written since the last barrier and puts one memory barrier before a command that reads
// or writes something already written, or writes something already read; independent
// commands (the q, k and v products of a layer) run without one between them.
//
// Host data travels through staging memory only: Upload copies into a host-visible area that
// a recorded transfer then copies to the device buffer (so it is ordered with the recorded
// work), Download records a transfer into a readback buffer and flushes.
//
// A failure (device lost, out of memory) is kept: later commands are dropped and every Flush
// returns the first error, which the backend reports from Synchronize.
#ifndef SHARDRUN_KERNELS_VULKAN_VULKAN_RECORDER_H_
#define SHARDRUN_KERNELS_VULKAN_VULKAN_RECORDER_H_

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/vulkan/vulkan_buffer.h"
#include "kernels/vulkan/vulkan_context.h"
#include "kernels/vulkan/vulkan_pipelines.h"

namespace shardrun {

// A range of a device buffer given to one binding of a dispatch. The descriptor starts at an
// offset aligned to minStorageBufferOffsetAlignment; `shift` is what the shader adds to its
// indices (in 4-byte elements) to reach `offset`.
struct Binding {
  const GpuBuffer* buffer = nullptr;
  VkDeviceSize aligned_offset = 0;
  VkDeviceSize range = 0;
  uint32_t shift = 0;
};

class CommandStream {
 public:
  // `max_binding_bytes`: the largest range one binding may span (the device's
  // maxStorageBufferRange, or less for tests of the split paths).
  static absl::StatusOr<std::unique_ptr<CommandStream>> Create(const VulkanContext& context,
                                                               Pipelines& pipelines,
                                                               uint64_t max_binding_bytes);
  ~CommandStream();
  CommandStream(const CommandStream&) = delete;
  CommandStream& operator=(const CommandStream&) = delete;

  uint64_t max_binding_bytes() const { return max_binding_bytes_; }
  // Whether `bytes` starting at byte `offset` fit in one binding (after alignment).
  bool Fits(uint64_t offset, uint64_t bytes) const;
  Binding Bind(const GpuBuffer& buffer, uint64_t offset, uint64_t bytes) const;

  // Records `kernel` over `groups` workgroups (spread over a 2-D grid when needed).
  void Dispatch(Kernel kernel, std::span<const Binding> bindings, const void* push,
                uint32_t push_bytes, uint64_t groups);
  void CopyBuffer(const GpuBuffer& src, uint64_t src_offset, const GpuBuffer& dst,
                  uint64_t dst_offset, uint64_t bytes);
  void Fill(const GpuBuffer& dst, uint64_t offset, uint64_t bytes, uint32_t value);
  // Host -> device through staging memory, ordered with the recorded commands.
  void Upload(const GpuBuffer& dst, uint64_t offset, const void* data, uint64_t bytes);
  // Device -> host: records the copy, flushes and copies out. On failure (see status())
  // `data` is zero-filled.
  void Download(const GpuBuffer& src, uint64_t offset, void* data, uint64_t bytes);

  // Keeps `buffer` alive until the recorded commands have run (a buffer freed while they
  // may still use it).
  void Retire(std::unique_ptr<GpuBuffer> buffer);
  // Submits what was recorded and waits for it. Returns the stream's error, if any.
  absl::Status Flush();
  absl::Status status() const { return error_; }
  // Marks the stream failed (a failure found outside it, e.g. a scratch allocation).
  void Fail(absl::Status status);

 private:
  CommandStream(const VulkanContext& context, Pipelines& pipelines, uint64_t max_binding_bytes)
      : context_(context), pipelines_(pipelines), max_binding_bytes_(max_binding_bytes) {}
  // Starts recording if nothing is recorded yet; false when the stream has failed.
  bool Begin();
  // Puts a barrier first if this access touches what earlier commands since the last
  // barrier wrote (or writes what they read).
  void Track(std::span<const VkBuffer> reads, std::span<const VkBuffer> writes);
  void Barrier();
  absl::StatusOr<VkDescriptorSet> AllocateSet(VkDescriptorSetLayout layout);

  const VulkanContext& context_;
  Pipelines& pipelines_;
  const uint64_t max_binding_bytes_;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer commands_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  bool recording_ = false;
  absl::Status error_;
  // Descriptor pools, all reset after each flush; `pool_` is the one being used.
  std::vector<VkDescriptorPool> pools_;
  size_t pool_ = 0;
  // Buffers touched since the last barrier.
  std::vector<VkBuffer> read_since_barrier_;
  std::vector<VkBuffer> written_since_barrier_;
  // Staging.
  std::unique_ptr<GpuBuffer> upload_;
  uint64_t upload_used_ = 0;
  std::unique_ptr<GpuBuffer> readback_;
  std::vector<std::unique_ptr<GpuBuffer>> retired_;
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_VULKAN_RECORDER_H_
