// The compute pipelines of the Vulkan backend, created on first use from the embedded
// SPIR-V through a VkPipelineCache that is loaded from and saved to disk
// (pipeline_cache_file.h).
//
// Every kernel binds storage buffers 0..bindings-1 of descriptor set 0 and takes its
// parameters as push constants; `write_mask` says which bindings it writes, for the command
// stream's barrier placement.
#ifndef SHARDRUN_KERNELS_VULKAN_VULKAN_PIPELINES_H_
#define SHARDRUN_KERNELS_VULKAN_VULKAN_PIPELINES_H_

#include <vulkan/vulkan.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/vulkan/vulkan_context.h"

namespace shardrun {

enum class Kernel {
  kAddScaled,
  kAttention,
  kEmbed,
  kMatMulF16,
  kMatMulF32,
  kMatMulQ4_0,
  kMatMulQ8_0,
  kQuantizeQ8_0,
  kRmsNorm,
  kRope,
  kSwiGlu,
};
inline constexpr int kKernelCount = 11;

struct KernelSpec {
  const char* shader;  // shaders/<shader>.comp
  uint32_t bindings;
  uint32_t write_mask;  // bit i: binding i is written
  uint32_t push_bytes;  // size of the shader's push-constant block
};
const KernelSpec& SpecOf(Kernel kernel);

struct Pipeline {
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
};

class Pipelines {
 public:
  // Loads the on-disk cache for the context's device, if there is one.
  static absl::StatusOr<std::unique_ptr<Pipelines>> Create(const VulkanContext& context);
  // Saves the cache when this run created pipelines the file did not have.
  ~Pipelines();
  Pipelines(const Pipelines&) = delete;
  Pipelines& operator=(const Pipelines&) = delete;

  // The kernel's pipeline, created now if it is the first use.
  absl::StatusOr<const Pipeline*> Get(Kernel kernel);

  // Whether the cache file existed at start (a warm start).
  bool warm() const { return warm_; }
  const std::string& cache_path() const { return cache_path_; }
  // Writes the cache file now (also done by the destructor).
  absl::Status Save();

 private:
  explicit Pipelines(const VulkanContext& context) : context_(context) {}

  const VulkanContext& context_;
  VkPipelineCache cache_ = VK_NULL_HANDLE;
  std::string cache_path_;
  bool warm_ = false;
  bool dirty_ = false;  // pipelines created since the last save
  double create_ms_ = 0.0;
  std::array<Pipeline, kKernelCount> pipelines_{};
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_VULKAN_VULKAN_PIPELINES_H_
