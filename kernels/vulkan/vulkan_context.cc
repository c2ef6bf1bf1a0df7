#include "kernels/vulkan/vulkan_context.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/device_failure.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

bool EnvFlag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' && std::strcmp(value, "0") != 0;
}

std::string VersionString(uint32_t v) {
  return absl::StrFormat("%u.%u.%u", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
                         VK_API_VERSION_PATCH(v));
}

const char* TypeName(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "cpu";
    default:
      return "other";
  }
}

// Lower is preferred: discrete, integrated, virtual, CPU, other.
int TypeRank(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return 3;
    default:
      return 4;
  }
}

bool LayerAvailable(const char* name) {
  uint32_t count = 0;
  if (vkEnumerateInstanceLayerProperties(&count, nullptr) != VK_SUCCESS) return false;
  std::vector<VkLayerProperties> layers(count);
  if (vkEnumerateInstanceLayerProperties(&count, layers.data()) != VK_SUCCESS) return false;
  return std::any_of(layers.begin(), layers.end(), [name](const VkLayerProperties& l) {
    return std::strcmp(l.layerName, name) == 0;
  });
}

// The instance API version: 1.2 where the loader has it (driver and subgroup properties),
// else what it has.
uint32_t InstanceApiVersion() {
  uint32_t version = VK_API_VERSION_1_0;
  auto enumerate = reinterpret_cast<PFN_vkEnumerateInstanceVersion>(
      vkGetInstanceProcAddr(VK_NULL_HANDLE, "vkEnumerateInstanceVersion"));
  if (enumerate != nullptr && enumerate(&version) != VK_SUCCESS) version = VK_API_VERSION_1_0;
  return std::min(version, static_cast<uint32_t>(VK_API_VERSION_1_2));
}

absl::StatusOr<VkInstance> CreateInstance(bool validation, uint32_t api_version) {
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "shardrun";
  app.pEngineName = "shardrun";
  app.apiVersion = api_version;
  std::vector<const char*> layers;
  std::vector<const char*> extensions;
  if (validation) {
    layers.push_back(kValidationLayer);
    extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
  }
  VkInstanceCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  info.pApplicationInfo = &app;
  info.enabledLayerCount = static_cast<uint32_t>(layers.size());
  info.ppEnabledLayerNames = layers.data();
  info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();
  VkInstance instance = VK_NULL_HANDLE;
  if (absl::Status s = VkCheck(vkCreateInstance(&info, nullptr, &instance), "vkCreateInstance");
      !s.ok()) {
    return s;
  }
  return instance;
}

VulkanDeviceInfo Describe(VkPhysicalDevice device, int index, uint32_t instance_version) {
  VkPhysicalDeviceProperties props{};
  vkGetPhysicalDeviceProperties(device, &props);
  VulkanDeviceInfo info;
  info.index = index;
  info.name = props.deviceName;
  info.type = TypeName(props.deviceType);
  info.api_version = VersionString(props.apiVersion);
  info.vendor_id = props.vendorID;
  info.device_id = props.deviceID;
  info.driver = absl::StrCat("driver version ", props.driverVersion);
  const VkPhysicalDeviceLimits& limits = props.limits;
  info.max_storage_buffer_range = limits.maxStorageBufferRange;
  info.max_workgroup_invocations = limits.maxComputeWorkGroupInvocations;
  for (int i = 0; i < 3; ++i) {
    info.max_workgroup_size[i] = limits.maxComputeWorkGroupSize[i];
    info.max_workgroup_count[i] = limits.maxComputeWorkGroupCount[i];
  }
  const uint32_t version = std::min(props.apiVersion, instance_version);
  if (version >= VK_API_VERSION_1_1) {
    VkPhysicalDeviceSubgroupProperties subgroup{};
    subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
    VkPhysicalDeviceDriverProperties driver{};
    driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
    if (version >= VK_API_VERSION_1_2) subgroup.pNext = &driver;
    VkPhysicalDeviceProperties2 props2{};
    props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    props2.pNext = &subgroup;
    vkGetPhysicalDeviceProperties2(device, &props2);
    info.subgroup_size = subgroup.subgroupSize;
    if (version >= VK_API_VERSION_1_2) {
      info.driver = absl::StrCat(driver.driverName, " (", driver.driverInfo, ")");
    }
  }
  VkPhysicalDeviceMemoryProperties memory{};
  vkGetPhysicalDeviceMemoryProperties(device, &memory);
  for (uint32_t h = 0; h < memory.memoryHeapCount; ++h) {
    info.heap_bytes.push_back(memory.memoryHeaps[h].size);
    info.heap_device_local.push_back(
        (memory.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0);
  }
  uint32_t families = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(device, &families, nullptr);
  std::vector<VkQueueFamilyProperties> family(families);
  vkGetPhysicalDeviceQueueFamilyProperties(device, &families, family.data());
  for (const VkQueueFamilyProperties& f : family) {
    if ((f.queueFlags & VK_QUEUE_COMPUTE_BIT) != 0 && f.queueCount > 0) {
      info.has_compute_queue = true;
    }
  }
  return info;
}

absl::StatusOr<std::vector<VkPhysicalDevice>> PhysicalDevices(VkInstance instance) {
  uint32_t count = 0;
  if (absl::Status s = VkCheck(vkEnumeratePhysicalDevices(instance, &count, nullptr),
                               "vkEnumeratePhysicalDevices");
      !s.ok()) {
    return s;
  }
  std::vector<VkPhysicalDevice> devices(count);
  if (absl::Status s = VkCheck(vkEnumeratePhysicalDevices(instance, &count, devices.data()),
                               "vkEnumeratePhysicalDevices");
      !s.ok()) {
    return s;
  }
  devices.resize(count);
  return devices;
}

}  // namespace

std::string VkResultName(VkResult result) {
  switch (result) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_NOT_READY:
      return "VK_NOT_READY";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_INCOMPLETE:
      return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
      return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
      return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
      return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
      return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
      return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FRAGMENTED_POOL:
      return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
      return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default:
      return absl::StrCat("VkResult ", static_cast<int>(result));
  }
}

absl::Status VkCheck(VkResult result, const std::string& what) {
  if (result == VK_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat("Vulkan: ", what, " failed: ", VkResultName(result));
  switch (result) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return DeviceFailure(absl::StatusCode::kResourceExhausted, message);
    case VK_ERROR_DEVICE_LOST:
      return DeviceFailure(absl::StatusCode::kUnavailable, message);
    case VK_ERROR_OUT_OF_POOL_MEMORY:
    case VK_ERROR_TOO_MANY_OBJECTS:
      return absl::ResourceExhaustedError(message);
    case VK_ERROR_INITIALIZATION_FAILED:
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<std::vector<VulkanDeviceInfo>> ListVulkanDevices() {
  const uint32_t api_version = InstanceApiVersion();
  auto instance = CreateInstance(false, api_version);
  if (!instance.ok()) return instance.status();
  auto devices = PhysicalDevices(*instance);
  std::vector<VulkanDeviceInfo> infos;
  if (devices.ok()) {
    for (size_t i = 0; i < devices->size(); ++i) {
      infos.push_back(Describe((*devices)[i], static_cast<int>(i), api_version));
    }
  }
  vkDestroyInstance(*instance, nullptr);
  if (!devices.ok()) return devices.status();
  return infos;
}

absl::StatusOr<std::unique_ptr<VulkanContext>> VulkanContext::Create(
    const VulkanContextOptions& options) {
  std::unique_ptr<VulkanContext> ctx(new VulkanContext());
  bool validation = options.validation || EnvFlag("SHARDRUN_VK_VALIDATION");
  if (validation && !LayerAvailable(kValidationLayer)) {
    spdlog::warn(
        "Vulkan: validation requested but {} is not installed "
        "(Debian: vulkan-validationlayers); running without it",
        kValidationLayer);
    validation = false;
  }
  const uint32_t api_version = InstanceApiVersion();
  auto instance = CreateInstance(validation, api_version);
  if (!instance.ok()) return instance.status();
  ctx->instance_ = *instance;
  if (validation) {
    auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(ctx->instance_, "vkCreateDebugUtilsMessengerEXT"));
    if (create == nullptr) return absl::InternalError("Vulkan: no vkCreateDebugUtilsMessengerEXT");
    VkDebugUtilsMessengerCreateInfoEXT info{};
    info.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT;
    info.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    info.pfnUserCallback = &VulkanContext::OnDebugMessage;
    info.pUserData = ctx.get();
    if (absl::Status s = VkCheck(create(ctx->instance_, &info, nullptr, &ctx->messenger_),
                                 "vkCreateDebugUtilsMessengerEXT");
        !s.ok()) {
      return s;
    }
  }

  auto devices = PhysicalDevices(ctx->instance_);
  if (!devices.ok()) return devices.status();
  if (devices->empty()) return absl::NotFoundError("Vulkan: the loader sees no device");
  std::vector<VulkanDeviceInfo> infos;
  for (size_t i = 0; i < devices->size(); ++i) {
    infos.push_back(Describe((*devices)[i], static_cast<int>(i), api_version));
  }
  int chosen = -1;
  if (options.device_index >= 0) {
    if (options.device_index >= static_cast<int>(devices->size())) {
      return absl::NotFoundError(absl::StrCat("Vulkan: no device ", options.device_index, " (",
                                              devices->size(), " found; see `shardrun devices`)"));
    }
    chosen = options.device_index;
    if (!infos[chosen].has_compute_queue) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Vulkan: device ", chosen, " (", infos[chosen].name, ") has no compute queue"));
    }
  } else {
    int best_rank = 1 << 30;
    for (size_t i = 0; i < devices->size(); ++i) {
      VkPhysicalDeviceProperties props{};
      vkGetPhysicalDeviceProperties((*devices)[i], &props);
      const int rank = TypeRank(props.deviceType);
      if (infos[i].has_compute_queue && rank < best_rank) {
        best_rank = rank;
        chosen = static_cast<int>(i);
      }
    }
    if (chosen < 0) return absl::NotFoundError("Vulkan: no device has a compute queue");
  }
  ctx->physical_device_ = (*devices)[chosen];
  ctx->info_ = infos[chosen];
  vkGetPhysicalDeviceProperties(ctx->physical_device_, &ctx->properties_);
  vkGetPhysicalDeviceMemoryProperties(ctx->physical_device_, &ctx->memory_);

  uint32_t families = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical_device_, &families, nullptr);
  std::vector<VkQueueFamilyProperties> family(families);
  vkGetPhysicalDeviceQueueFamilyProperties(ctx->physical_device_, &families, family.data());
  // A compute-only family when there is one (often an asynchronous compute engine), else any
  // family with compute.
  int queue_family = -1;
  for (uint32_t f = 0; f < families; ++f) {
    if ((family[f].queueFlags & VK_QUEUE_COMPUTE_BIT) == 0) continue;
    if (queue_family < 0 || (family[f].queueFlags & VK_QUEUE_GRAPHICS_BIT) == 0) {
      queue_family = static_cast<int>(f);
    }
  }
  ctx->queue_family_ = static_cast<uint32_t>(queue_family);
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{};
  queue.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  queue.queueFamilyIndex = ctx->queue_family_;
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkDeviceCreateInfo device_info{};
  device_info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  device_info.queueCreateInfoCount = 1;
  device_info.pQueueCreateInfos = &queue;
  if (absl::Status s =
          VkCheck(vkCreateDevice(ctx->physical_device_, &device_info, nullptr, &ctx->device_),
                  "vkCreateDevice");
      !s.ok()) {
    return s;
  }
  vkGetDeviceQueue(ctx->device_, ctx->queue_family_, 0, &ctx->queue_);
  spdlog::info("Vulkan: device {} '{}' ({}, {}){}", chosen, ctx->info_.name, ctx->info_.type,
               ctx->info_.driver, validation ? ", validation on" : "");
  return ctx;
}

VulkanContext::~VulkanContext() {
  if (device_ != VK_NULL_HANDLE) {
    vkDeviceWaitIdle(device_);
    vkDestroyDevice(device_, nullptr);
  }
  if (messenger_ != VK_NULL_HANDLE) {
    auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
    if (destroy != nullptr) destroy(instance_, messenger_, nullptr);
  }
  if (instance_ != VK_NULL_HANDLE) vkDestroyInstance(instance_, nullptr);
}

VKAPI_ATTR VkBool32 VKAPI_CALL VulkanContext::OnDebugMessage(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT,
    const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  auto* ctx = static_cast<VulkanContext*>(user);
  const char* message = data != nullptr && data->pMessage != nullptr ? data->pMessage : "";
  if ((severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) != 0) {
    ctx->validation_errors_.fetch_add(1);
    spdlog::error("Vulkan validation: {}", message);
  } else {
    spdlog::warn("Vulkan validation: {}", message);
  }
  return VK_FALSE;
}

int VulkanContext::FindMemoryType(uint32_t type_bits, VkMemoryPropertyFlags required,
                                  VkMemoryPropertyFlags preferred) const {
  int fallback = -1;
  for (uint32_t i = 0; i < memory_.memoryTypeCount; ++i) {
    if ((type_bits & (1u << i)) == 0) continue;
    const VkMemoryPropertyFlags flags = memory_.memoryTypes[i].propertyFlags;
    if ((flags & required) != required) continue;
    if ((flags & preferred) == preferred) return static_cast<int>(i);
    if (fallback < 0) fallback = static_cast<int>(i);
  }
  return fallback;
}

void VulkanContext::InjectFault(VulkanFault fault) {
  if (fault_.load() == VulkanFault::kDeviceLost) return;
  if (fault == VulkanFault::kDeviceLost) {
    spdlog::warn("Vulkan: injected fault: device '{}' is lost", info_.name);
  } else if (fault == VulkanFault::kOutOfDeviceMemory) {
    spdlog::warn("Vulkan: injected fault: device '{}' has no memory left", info_.name);
  }
  fault_.store(fault);
}

VkResult VulkanContext::InjectedResult(VulkanCall call) const {
  switch (fault_.load()) {
    case VulkanFault::kDeviceLost:
      return call == VulkanCall::kAllocateMemory ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
    case VulkanFault::kOutOfDeviceMemory:
      return call == VulkanCall::kAllocateMemory ? VK_ERROR_OUT_OF_DEVICE_MEMORY : VK_SUCCESS;
    case VulkanFault::kNone:
      break;
  }
  return VK_SUCCESS;
}

}  // namespace shardrun
