#include "kernels/vulkan/vulkan_pipelines.h"

#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/vulkan/pipeline_cache_file.h"
#include "kernels/vulkan/shaders.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

constexpr KernelSpec kSpecs[kKernelCount] = {
    {"add_scaled", 2, 0b1, 16},     {"attention", 4, 0b1000, 36},   {"embed", 3, 0b100, 36},
    {"matmul_f16", 3, 0b100, 32},   {"matmul_f32", 3, 0b100, 28},   {"matmul_q4_0", 4, 0b1000, 24},
    {"matmul_q8_0", 4, 0b1000, 24}, {"quantize_q8_0", 3, 0b110, 8}, {"rms_norm", 3, 0b100, 24},
    {"rope", 2, 0b1, 20},           {"swiglu", 2, 0b1, 12},
};

const ShaderCode* FindShader(const char* name) {
  for (const ShaderCode& shader : EmbeddedShaders()) {
    if (std::strcmp(shader.name, name) == 0) return &shader;
  }
  return nullptr;
}

}  // namespace

const KernelSpec& SpecOf(Kernel kernel) { return kSpecs[static_cast<int>(kernel)]; }

absl::StatusOr<std::unique_ptr<Pipelines>> Pipelines::Create(const VulkanContext& context) {
  std::unique_ptr<Pipelines> p(new Pipelines(context));
  p->cache_path_ = PipelineCachePath(context.properties(), EmbeddedShaderHash());
  const std::vector<uint8_t> data = ReadPipelineCache(p->cache_path_);
  p->warm_ = !data.empty();
  VkPipelineCacheCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO;
  info.initialDataSize = data.size();
  info.pInitialData = data.empty() ? nullptr : data.data();
  VkResult result = vkCreatePipelineCache(context.device(), &info, nullptr, &p->cache_);
  if (result != VK_SUCCESS && !data.empty()) {
    // A damaged file is only a cold start.
    spdlog::warn("Vulkan: ignoring the pipeline cache {} ({})", p->cache_path_,
                 VkResultName(result));
    p->warm_ = false;
    info.initialDataSize = 0;
    info.pInitialData = nullptr;
    result = vkCreatePipelineCache(context.device(), &info, nullptr, &p->cache_);
  }
  if (absl::Status s = VkCheck(result, "vkCreatePipelineCache"); !s.ok()) return s;
  spdlog::debug("Vulkan: pipeline cache {} ({})", p->cache_path_,
                p->warm_ ? absl::StrCat("warm, ", data.size(), " bytes") : "cold");
  return p;
}

Pipelines::~Pipelines() {
  if (dirty_) {
    if (absl::Status s = Save(); !s.ok()) {
      spdlog::warn("Vulkan: pipeline cache not saved: {}", std::string(s.message()));
    }
  }
  const VkDevice device = context_.device();
  for (Pipeline& p : pipelines_) {
    if (p.pipeline != VK_NULL_HANDLE) vkDestroyPipeline(device, p.pipeline, nullptr);
    if (p.layout != VK_NULL_HANDLE) vkDestroyPipelineLayout(device, p.layout, nullptr);
    if (p.set_layout != VK_NULL_HANDLE) vkDestroyDescriptorSetLayout(device, p.set_layout, nullptr);
  }
  if (cache_ != VK_NULL_HANDLE) vkDestroyPipelineCache(device, cache_, nullptr);
}

absl::Status Pipelines::Save() {
  size_t size = 0;
  if (absl::Status s = VkCheck(vkGetPipelineCacheData(context_.device(), cache_, &size, nullptr),
                               "vkGetPipelineCacheData");
      !s.ok()) {
    return s;
  }
  std::vector<uint8_t> data(size);
  if (absl::Status s =
          VkCheck(vkGetPipelineCacheData(context_.device(), cache_, &size, data.data()),
                  "vkGetPipelineCacheData");
      !s.ok()) {
    return s;
  }
  data.resize(size);
  if (absl::Status s = WritePipelineCache(cache_path_, data); !s.ok()) return s;
  dirty_ = false;
  spdlog::debug("Vulkan: saved {} bytes of pipeline cache to {}", data.size(), cache_path_);
  return absl::OkStatus();
}

absl::StatusOr<const Pipeline*> Pipelines::Get(Kernel kernel) {
  Pipeline& p = pipelines_[static_cast<int>(kernel)];
  if (p.pipeline != VK_NULL_HANDLE) return &p;
  const KernelSpec& spec = SpecOf(kernel);
  const ShaderCode* code = FindShader(spec.shader);
  if (code == nullptr) {
    return absl::InternalError(absl::StrCat("Vulkan: shader ", spec.shader, " is not embedded"));
  }
  const auto start = std::chrono::steady_clock::now();
  const VkDevice device = context_.device();

  std::vector<VkDescriptorSetLayoutBinding> bindings(spec.bindings);
  for (uint32_t i = 0; i < spec.bindings; ++i) {
    bindings[i].binding = i;
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo set_info{};
  set_info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  set_info.bindingCount = spec.bindings;
  set_info.pBindings = bindings.data();
  if (absl::Status s =
          VkCheck(vkCreateDescriptorSetLayout(device, &set_info, nullptr, &p.set_layout),
                  "vkCreateDescriptorSetLayout");
      !s.ok()) {
    return s;
  }
  VkPushConstantRange push{};
  push.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  push.size = spec.push_bytes;
  VkPipelineLayoutCreateInfo layout_info{};
  layout_info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  layout_info.setLayoutCount = 1;
  layout_info.pSetLayouts = &p.set_layout;
  layout_info.pushConstantRangeCount = 1;
  layout_info.pPushConstantRanges = &push;
  if (absl::Status s = VkCheck(vkCreatePipelineLayout(device, &layout_info, nullptr, &p.layout),
                               "vkCreatePipelineLayout");
      !s.ok()) {
    return s;
  }
  VkShaderModuleCreateInfo module_info{};
  module_info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  module_info.codeSize = code->word_count * sizeof(uint32_t);
  module_info.pCode = code->words;
  VkShaderModule module = VK_NULL_HANDLE;
  if (absl::Status s = VkCheck(vkCreateShaderModule(device, &module_info, nullptr, &module),
                               absl::StrCat("vkCreateShaderModule (", spec.shader, ")"));
      !s.ok()) {
    return s;
  }
  VkComputePipelineCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = "main";
  info.layout = p.layout;
  const VkResult result = vkCreateComputePipelines(device, cache_, 1, &info, nullptr, &p.pipeline);
  vkDestroyShaderModule(device, module, nullptr);
  if (absl::Status s =
          VkCheck(result, absl::StrCat("vkCreateComputePipelines (", spec.shader, ")"));
      !s.ok()) {
    p.pipeline = VK_NULL_HANDLE;
    return s;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  create_ms_ += ms;
  dirty_ = true;
  spdlog::debug("Vulkan: pipeline {} created in {:.2f} ms ({} cache; {:.1f} ms in all so far)",
                spec.shader, ms, warm_ ? "warm" : "cold", create_ms_);
  return &p;
}

}  // namespace shardrun
