#include "kernels/vulkan/vulkan_buffer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace shardrun {

absl::StatusOr<std::unique_ptr<GpuBuffer>> GpuBuffer::Create(const VulkanContext& context,
                                                             VkDeviceSize bytes, Kind kind) {
  bytes = std::max<VkDeviceSize>(bytes, 16);
  std::unique_ptr<GpuBuffer> buffer(new GpuBuffer(context.device(), bytes));
  VkBufferCreateInfo info{};
  info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  info.size = bytes;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkMemoryPropertyFlags required = 0;
  VkMemoryPropertyFlags preferred = 0;
  switch (kind) {
    case Kind::kDevice:
      info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                   VK_BUFFER_USAGE_TRANSFER_DST_BIT;
      preferred = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
      break;
    case Kind::kUpload:
      info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      break;
    case Kind::kReadback:
      info.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;  // the host reads it
      break;
  }
  const std::string what = absl::StrCat("buffer of ", bytes, " bytes");
  if (absl::Status s = VkCheck(vkCreateBuffer(context.device(), &info, nullptr, &buffer->buffer_),
                               absl::StrCat("vkCreateBuffer (", what, ")"));
      !s.ok()) {
    return s;
  }
  VkMemoryRequirements needs{};
  vkGetBufferMemoryRequirements(context.device(), buffer->buffer_, &needs);
  const int type = context.FindMemoryType(needs.memoryTypeBits, required, preferred);
  if (type < 0) {
    return absl::ResourceExhaustedError(absl::StrCat("Vulkan: no memory type for a ", what));
  }
  VkMemoryAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  alloc.allocationSize = needs.size;
  alloc.memoryTypeIndex = static_cast<uint32_t>(type);
  // An injected fault (vulkan_context.h) stands in for the driver's answer.
  VkResult allocated = context.InjectedResult(VulkanCall::kAllocateMemory);
  if (allocated == VK_SUCCESS) {
    allocated = vkAllocateMemory(context.device(), &alloc, nullptr, &buffer->memory_);
  }
  if (absl::Status s = VkCheck(allocated, absl::StrCat("vkAllocateMemory (", what, ")")); !s.ok()) {
    return s;
  }
  if (absl::Status s =
          VkCheck(vkBindBufferMemory(context.device(), buffer->buffer_, buffer->memory_, 0),
                  "vkBindBufferMemory");
      !s.ok()) {
    return s;
  }
  if (kind != Kind::kDevice) {
    if (absl::Status s = VkCheck(
            vkMapMemory(context.device(), buffer->memory_, 0, VK_WHOLE_SIZE, 0, &buffer->mapped_),
            "vkMapMemory");
        !s.ok()) {
      return s;
    }
  }
  return buffer;
}

GpuBuffer::~GpuBuffer() {
  if (buffer_ != VK_NULL_HANDLE) vkDestroyBuffer(device_, buffer_, nullptr);
  if (memory_ != VK_NULL_HANDLE) vkFreeMemory(device_, memory_, nullptr);  // unmaps too
}

}  // namespace shardrun
