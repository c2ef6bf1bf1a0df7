#include "kernels/backend_factory.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/device_failure.h"
#include "spdlog/spdlog.h"
#if SHARDRUN_HAVE_VULKAN
#include "kernels/vulkan/vulkan_backend.h"
#include "kernels/vulkan/vulkan_context.h"
#endif

namespace shardrun {
namespace {

[[maybe_unused]] constexpr const char* kNoVulkan =
    "this shardrun was built without the Vulkan backend (install libvulkan-dev and glslc, "
    "then reconfigure with -DSHARDRUN_VULKAN=ON)";

absl::StatusOr<std::unique_ptr<Backend>> CreateCpu(const BackendOptions& options) {
  auto cpu = CpuBackend::Create(options.threads);
  if (!cpu.ok()) return cpu.status();
  return std::unique_ptr<Backend>(*std::move(cpu));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateVulkan(const BackendOptions& options) {
#if SHARDRUN_HAVE_VULKAN
  VulkanBackendOptions vk;
  vk.device_index = options.vk_device;
  vk.cpu_threads = options.threads;
  auto backend = VulkanBackend::Create(vk);
  if (backend.ok()) return std::unique_ptr<Backend>(*std::move(backend));
  // A device that does not come up (no driver, initialization or memory failure) is this
  // worker's device failure: it leaves and its shard moves, as when the device fails later.
  // A bad --vk-device index stays the caller's error.
  const absl::StatusCode code = backend.status().code();
  if (code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kResourceExhausted) {
    return DeviceFailure(code, std::string(backend.status().message()));
  }
  return backend.status();
#else
  (void)options;
  return absl::FailedPreconditionError(kNoVulkan);
#endif
}

// The reason auto does not take Vulkan, or empty when it should.
std::string AutoSkipReason(const BackendOptions& options) {
  if (!VulkanBuilt()) return "built without Vulkan";
  auto devices = ListGpuDevices();
  if (!devices.ok()) return std::string(devices.status().message());
  if (options.vk_device >= 0) return "";  // an explicit device is taken as it is
  for (const VulkanDeviceInfo& d : *devices) {
    if (d.has_compute_queue && d.type != "cpu" && d.type != "other") return "";
  }
  return devices->empty() ? "no Vulkan device"
                          : "no Vulkan GPU (only CPU-type devices, slower than the CPU backend)";
}

// CreateBackend without the injected fault.
absl::StatusOr<std::unique_ptr<Backend>> CreateUnfaulted(const BackendOptions& options) {
  switch (options.kind) {
    case BackendChoice::kCpu:
      return CreateCpu(options);
    case BackendChoice::kVulkan:
      return CreateVulkan(options);
    case BackendChoice::kAuto:
      break;
  }
  if (ResolveBackendChoice(options) == BackendChoice::kCpu) return CreateCpu(options);
  auto vulkan = CreateVulkan(options);
  if (vulkan.ok()) return vulkan;
  spdlog::info("backend auto: CPU (Vulkan failed: {})", std::string(vulkan.status().message()));
  return CreateCpu(options);
}

}  // namespace

absl::StatusOr<BackendChoice> ParseBackendChoice(std::string_view name) {
  if (name == "cpu") return BackendChoice::kCpu;
  if (name == "vulkan") return BackendChoice::kVulkan;
  if (name == "auto") return BackendChoice::kAuto;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", std::string(name), "' (cpu, vulkan or auto)"));
}

std::string_view BackendChoiceName(BackendChoice choice) {
  switch (choice) {
    case BackendChoice::kCpu:
      return "cpu";
    case BackendChoice::kVulkan:
      return "vulkan";
    case BackendChoice::kAuto:
      return "auto";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options) {
  auto backend = CreateUnfaulted(options);
  if (!backend.ok() || options.fault == DeviceFault::kNone) return backend;
  if (absl::Status s = InjectDeviceFault(**backend, options.fault); !s.ok()) return s;
  return backend;
}

absl::Status InjectDeviceFault(Backend& backend, DeviceFault fault) {
#if SHARDRUN_HAVE_VULKAN
  if (auto* vulkan = dynamic_cast<VulkanBackend*>(&backend); vulkan != nullptr) {
    switch (fault) {
      case DeviceFault::kNone:
        vulkan->InjectFault(VulkanFault::kNone);
        break;
      case DeviceFault::kLost:
        vulkan->InjectFault(VulkanFault::kDeviceLost);
        break;
      case DeviceFault::kOutOfMemory:
        vulkan->InjectFault(VulkanFault::kOutOfDeviceMemory);
        break;
    }
    return absl::OkStatus();
  }
#else
  (void)fault;
#endif
  return absl::FailedPreconditionError(absl::StrCat(
      "cannot inject a GPU fault into the ", backend.name(),
      " backend: it has no device (GPU faults need a Vulkan worker, --backend vulkan)"));
}

BackendChoice ResolveBackendChoice(const BackendOptions& options) {
  if (options.kind != BackendChoice::kAuto) return options.kind;
  if (const std::string reason = AutoSkipReason(options); !reason.empty()) {
    spdlog::info("backend auto: CPU ({})", reason);
    return BackendChoice::kCpu;
  }
  spdlog::info("backend auto: Vulkan");
  return BackendChoice::kVulkan;
}

bool VulkanBuilt() {
#if SHARDRUN_HAVE_VULKAN
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::vector<VulkanDeviceInfo>> ListGpuDevices() {
#if SHARDRUN_HAVE_VULKAN
  return ListVulkanDevices();
#else
  return absl::FailedPreconditionError(kNoVulkan);
#endif
}

}  // namespace shardrun
