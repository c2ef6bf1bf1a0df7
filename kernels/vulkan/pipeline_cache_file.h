// The VkPipelineCache kept on disk between runs, so that a second start skips the driver's
// shader compilation.
//
// One file per device, driver and shader set: the name holds the vendor and device ids, the
// driver version, the pipelineCacheUUID and a hash of the embedded SPIR-V, so a driver update
// or a rebuilt shader never meets a stale cache (drivers also check the header themselves).
#ifndef SHARDRUN_KERNELS_VULKAN_PIPELINE_CACHE_FILE_H_
#define SHARDRUN_KERNELS_VULKAN_PIPELINE_CACHE_FILE_H_

#include <vulkan/vulkan.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace shardrun {

// $XDG_CACHE_HOME/shardrun/vulkan-pipelines-... or ~/.cache/shardrun/...; empty when neither
// variable is set.
std::string PipelineCachePath(const VkPhysicalDeviceProperties& props, uint64_t shader_hash);

// The file's bytes, or nothing when it is missing or unreadable (a cold start).
std::vector<uint8_t> ReadPipelineCache(const std::string& path);

// Writes the file atomically (a temporary file renamed into place), creating directories.
absl::Status WritePipelineCache(const std::string& path, std::span<const uint8_t> data);

// FNV-1a over the words of every embedded shader.
uint64_t EmbeddedShaderHash();

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_PIPELINE_CACHE_FILE_H_
