// The compute shaders of the Vulkan backend as SPIR-V words, compiled from shaders/*.comp by
// glslc at build time and embedded in the binary (the generated shaders.cc).
#ifndef SHARDRUN_KERNELS_VULKAN_SHADERS_H_
#define SHARDRUN_KERNELS_VULKAN_SHADERS_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace shardrun {

struct ShaderCode {
  const char* name;  // file name without .comp
  const uint32_t* words;
  size_t word_count;
};

std::span<const ShaderCode> EmbeddedShaders();

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_SHADERS_H_
