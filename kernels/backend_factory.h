// Creates the compute backend a command line asks for: cpu, vulkan or auto.
//
// auto takes Vulkan when a GPU is present (a discrete, integrated or virtual device; a
// CPU-type Vulkan driver such as lavapipe is slower than the CPU backend) and otherwise the
// CPU backend, saying why at info level. An explicit `vulkan` that cannot be had is an
// error, including in a build without the Vulkan backend.
#ifndef SHARDRUN_KERNELS_BACKEND_FACTORY_H_
#define SHARDRUN_KERNELS_BACKEND_FACTORY_H_

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/vulkan/vulkan_device_info.h"

namespace shardrun {

enum class BackendChoice { kCpu, kVulkan, kAuto };

// "cpu", "vulkan", "auto".
absl::StatusOr<BackendChoice> ParseBackendChoice(std::string_view name);
std::string_view BackendChoiceName(BackendChoice choice);

// Device failures a test injects into a Vulkan backend (worker/fault_injection.h). They take
// the backend's real error path: its Vulkan calls report VK_ERROR_DEVICE_LOST (every queue
// submission from then on) or VK_ERROR_OUT_OF_DEVICE_MEMORY (every device allocation).
enum class DeviceFault { kNone, kLost, kOutOfMemory };

struct BackendOptions {
  BackendChoice kind = BackendChoice::kCpu;
  int threads = 1;     // CPU backend threads (the Vulkan backend's CPU fallback too)
  int vk_device = -1;  // Vulkan device index (`shardrun devices`); -1 = the best one
  // Testing: injected as soon as the backend exists (kOutOfMemory: no weight or buffer can be
  // allocated). A backend without a device cannot have one: an error.
  DeviceFault fault = DeviceFault::kNone;
};

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

// Testing: `backend`'s device fails as `fault` says from now on; an error for a backend
// without a device (the CPU backend).
absl::Status InjectDeviceFault(Backend& backend, DeviceFault fault);

// What kAuto becomes on this machine (kCpu or kVulkan, logging why at info level); other
// choices are returned as they are. For a worker, whose Hello states its backend before it
// creates one.
BackendChoice ResolveBackendChoice(const BackendOptions& options);

// Whether this build has the Vulkan backend.
bool VulkanBuilt();
// The Vulkan devices the loader sees; an error in a build without Vulkan or without a
// usable loader.
absl::StatusOr<std::vector<VulkanDeviceInfo>> ListGpuDevices();

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_BACKEND_FACTORY_H_
