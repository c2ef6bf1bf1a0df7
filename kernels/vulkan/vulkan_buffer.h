// One VkBuffer with its own memory allocation.
//
// Device buffers (weights, activations, KV cache, scratch) live in device-local memory and are
// reached by shaders and transfer commands only; upload and readback buffers are host-visible,
// persistently mapped staging memory used by Write, Read and LoadWeight.
#ifndef SHARDRUN_KERNELS_VULKAN_VULKAN_BUFFER_H_
#define SHARDRUN_KERNELS_VULKAN_VULKAN_BUFFER_H_

#include <vulkan/vulkan.h>

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/vulkan/vulkan_context.h"

namespace shardrun {

class GpuBuffer {
 public:
  enum class Kind { kDevice, kUpload, kReadback };

  // `bytes` > 0 (a zero request gets a minimal buffer: Vulkan has no empty buffers).
  static absl::StatusOr<std::unique_ptr<GpuBuffer>> Create(const VulkanContext& context,
                                                           VkDeviceSize bytes, Kind kind);
  ~GpuBuffer();
  GpuBuffer(const GpuBuffer&) = delete;
  GpuBuffer& operator=(const GpuBuffer&) = delete;

  VkBuffer handle() const { return buffer_; }
  VkDeviceSize bytes() const { return bytes_; }
  void* mapped() const { return mapped_; }  // upload / readback only

 private:
  GpuBuffer(VkDevice device, VkDeviceSize bytes) : device_(device), bytes_(bytes) {}

  VkDevice device_;
  VkDeviceSize bytes_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_VULKAN_BUFFER_H_
