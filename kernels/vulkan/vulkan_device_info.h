// What `shardrun devices` and device selection know about one Vulkan physical device, in
// plain types so that code built without Vulkan can name it.
#ifndef SHARDRUN_KERNELS_VULKAN_VULKAN_DEVICE_INFO_H_
#define SHARDRUN_KERNELS_VULKAN_VULKAN_DEVICE_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

namespace shardrun {

struct VulkanDeviceInfo {
  int index = 0;  // in the loader's enumeration order (--vk-device)
  std::string name;
  std::string type;    // "discrete", "integrated", "virtual", "cpu", "other"
  std::string driver;  // driver name and info (Vulkan 1.2), else the version number
  std::string api_version;
  uint32_t vendor_id = 0;
  uint32_t device_id = 0;
  bool has_compute_queue = false;
  std::vector<uint64_t> heap_bytes;  // every memory heap
  std::vector<bool> heap_device_local;
  uint64_t max_storage_buffer_range = 0;  // bytes one storage binding may span
  uint32_t max_workgroup_size[3] = {0, 0, 0};
  uint32_t max_workgroup_invocations = 0;
  uint32_t max_workgroup_count[3] = {0, 0, 0};
  uint32_t subgroup_size = 0;  // 0 when the device reports none (Vulkan 1.0)
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_VULKAN_DEVICE_INFO_H_
