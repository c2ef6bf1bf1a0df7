// The Vulkan instance, the chosen physical device and a logical device with one compute
// queue: everything the backend's other parts create their objects from.
//
// Device choice: an explicit index (the loader's order, as `shardrun devices` prints it), or
// the first discrete GPU, then integrated, then virtual, then CPU (lavapipe) device that has
// a compute queue. With validation on (an option, or SHARDRUN_VK_VALIDATION=1) the Khronos
// validation layer is enabled when installed and a debug messenger counts its errors.
#ifndef SHARDRUN_KERNELS_VULKAN_VULKAN_CONTEXT_H_
#define SHARDRUN_KERNELS_VULKAN_VULKAN_CONTEXT_H_

#include <vulkan/vulkan.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/vulkan/vulkan_device_info.h"

namespace shardrun {

// "VK_ERROR_DEVICE_LOST", ...
std::string VkResultName(VkResult result);
// OK, or an error naming `what` and the result (ResourceExhausted for out-of-memory results,
// Unavailable for a lost device, Internal otherwise). A lost device and device or host memory
// running out are device failures (kernels/device_failure.h).
absl::Status VkCheck(VkResult result, const std::string& what);

// Device failures a test can inject (worker/fault_injection.h). The calls they affect report
// the failure instead of running, and the result goes through VkCheck as a real one would.
enum class VulkanFault {
  kNone,
  kDeviceLost,         // every queue submission and fence wait: VK_ERROR_DEVICE_LOST
  kOutOfDeviceMemory,  // every device memory allocation: VK_ERROR_OUT_OF_DEVICE_MEMORY
};
// The Vulkan calls an injected fault can replace.
enum class VulkanCall { kQueueSubmit, kWaitForFences, kAllocateMemory };

// The devices the loader sees. Fails only when no Vulkan loader or driver is usable.
absl::StatusOr<std::vector<VulkanDeviceInfo>> ListVulkanDevices();

struct VulkanContextOptions {
  int device_index = -1;    // -1: the best device as above
  bool validation = false;  // also switched on by SHARDRUN_VK_VALIDATION=1
};

class VulkanContext {
 public:
  static absl::StatusOr<std::unique_ptr<VulkanContext>> Create(const VulkanContextOptions& options);
  ~VulkanContext();
  VulkanContext(const VulkanContext&) = delete;
  VulkanContext& operator=(const VulkanContext&) = delete;

  VkInstance instance() const { return instance_; }
  VkPhysicalDevice physical_device() const { return physical_device_; }
  VkDevice device() const { return device_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  const VkPhysicalDeviceProperties& properties() const { return properties_; }
  const VkPhysicalDeviceMemoryProperties& memory_properties() const { return memory_; }
  const VulkanDeviceInfo& info() const { return info_; }
  // Whether the validation layer is active, and the errors it has reported so far.
  bool validation_enabled() const { return messenger_ != VK_NULL_HANDLE; }
  int validation_errors() const { return validation_errors_.load(); }

  // A memory type allowed by `type_bits` with all of `required` flags, preferring one that
  // also has `preferred`; -1 if none.
  int FindMemoryType(uint32_t type_bits, VkMemoryPropertyFlags required,
                     VkMemoryPropertyFlags preferred) const;

  // Testing: from now on the calls `fault` names fail (kNone: none). A lost device stays
  // lost, as a real one does: a later fault does not revive it.
  void InjectFault(VulkanFault fault);
  // VK_SUCCESS when `call` may run, else the injected failure it reports instead.
  VkResult InjectedResult(VulkanCall call) const;

 private:
  VulkanContext() = default;
  static VKAPI_ATTR VkBool32 VKAPI_CALL OnDebugMessage(
      VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
      const VkDebugUtilsMessengerCallbackDataEXT* data, void* user);

  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_device_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkPhysicalDeviceProperties properties_{};
  VkPhysicalDeviceMemoryProperties memory_{};
  VulkanDeviceInfo info_;
  std::atomic<int> validation_errors_{0};
  std::atomic<VulkanFault> fault_{VulkanFault::kNone};
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_VULKAN_CONTEXT_H_
