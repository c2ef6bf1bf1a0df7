#include "kernels/vulkan/vulkan_recorder.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// Staging for uploads grows to this size; larger uploads go through it in pieces.
constexpr uint64_t kInitialUploadBytes = uint64_t{4} << 20;
constexpr uint64_t kMaxUploadBytes = uint64_t{64} << 20;
// Descriptor sets per pool (each with up to 4 storage buffers).
constexpr uint32_t kSetsPerPool = 1024;

bool Contains(const std::vector<VkBuffer>& set, VkBuffer buffer) {
  return std::find(set.begin(), set.end(), buffer) != set.end();
}

uint64_t RoundUp(uint64_t a, uint64_t b) { return (a + b - 1) / b * b; }

}  // namespace

absl::StatusOr<std::unique_ptr<CommandStream>> CommandStream::Create(const VulkanContext& context,
                                                                     Pipelines& pipelines,
                                                                     uint64_t max_binding_bytes) {
  std::unique_ptr<CommandStream> s(new CommandStream(context, pipelines, max_binding_bytes));
  VkCommandPoolCreateInfo pool{};
  pool.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pool.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pool.queueFamilyIndex = context.queue_family();
  if (absl::Status st =
          VkCheck(vkCreateCommandPool(context.device(), &pool, nullptr, &s->command_pool_),
                  "vkCreateCommandPool");
      !st.ok()) {
    return st;
  }
  VkCommandBufferAllocateInfo alloc{};
  alloc.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  alloc.commandPool = s->command_pool_;
  alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  alloc.commandBufferCount = 1;
  if (absl::Status st = VkCheck(vkAllocateCommandBuffers(context.device(), &alloc, &s->commands_),
                                "vkAllocateCommandBuffers");
      !st.ok()) {
    return st;
  }
  VkFenceCreateInfo fence{};
  fence.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  if (absl::Status st =
          VkCheck(vkCreateFence(context.device(), &fence, nullptr, &s->fence_), "vkCreateFence");
      !st.ok()) {
    return st;
  }
  auto upload = GpuBuffer::Create(context, kInitialUploadBytes, GpuBuffer::Kind::kUpload);
  if (!upload.ok()) return upload.status();
  s->upload_ = *std::move(upload);
  return s;
}

CommandStream::~CommandStream() {
  if (recording_) Flush().IgnoreError();  // buffers about to be freed may still be in use
  const VkDevice device = context_.device();
  vkDeviceWaitIdle(device);
  for (VkDescriptorPool pool : pools_) vkDestroyDescriptorPool(device, pool, nullptr);
  if (fence_ != VK_NULL_HANDLE) vkDestroyFence(device, fence_, nullptr);
  if (command_pool_ != VK_NULL_HANDLE) vkDestroyCommandPool(device, command_pool_, nullptr);
}

void CommandStream::Fail(absl::Status status) {
  if (error_.ok()) {
    spdlog::error("{}", std::string(status.message()));
    error_ = std::move(status);
  }
}

bool CommandStream::Fits(uint64_t offset, uint64_t bytes) const {
  const uint64_t align = context_.properties().limits.minStorageBufferOffsetAlignment;
  return offset % align + bytes <= max_binding_bytes_;
}

Binding CommandStream::Bind(const GpuBuffer& buffer, uint64_t offset, uint64_t bytes) const {
  const uint64_t align =
      std::max<uint64_t>(4, context_.properties().limits.minStorageBufferOffsetAlignment);
  Binding b;
  b.buffer = &buffer;
  b.aligned_offset = offset / align * align;
  b.shift = static_cast<uint32_t>((offset - b.aligned_offset) / 4);
  b.range = std::min<uint64_t>(RoundUp(offset - b.aligned_offset + std::max<uint64_t>(bytes, 4), 4),
                               buffer.bytes() - b.aligned_offset);
  if (offset % 4 != 0 || b.range > max_binding_bytes_ || offset + bytes > buffer.bytes()) {
    // The callers split their work so that this cannot happen; going on would read out of
    // bounds on the device.
    spdlog::critical("Vulkan: binding of {} bytes at {} in a buffer of {} (limit {})", bytes,
                     offset, buffer.bytes(), max_binding_bytes_);
    std::abort();
  }
  return b;
}

bool CommandStream::Begin() {
  if (!error_.ok()) return false;
  if (recording_) return true;
  VkCommandBufferBeginInfo begin{};
  begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  begin.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  if (absl::Status s = VkCheck(vkBeginCommandBuffer(commands_, &begin), "vkBeginCommandBuffer");
      !s.ok()) {
    Fail(s);
    return false;
  }
  recording_ = true;
  read_since_barrier_.clear();
  written_since_barrier_.clear();
  return true;
}

void CommandStream::Barrier() {
  VkMemoryBarrier barrier{};
  barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  barrier.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  barrier.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                          VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages =
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(commands_, stages, stages, 0, 1, &barrier, 0, nullptr, 0, nullptr);
  read_since_barrier_.clear();
  written_since_barrier_.clear();
}

void CommandStream::Track(std::span<const VkBuffer> reads, std::span<const VkBuffer> writes) {
  bool hazard = false;
  for (VkBuffer b : reads) hazard = hazard || Contains(written_since_barrier_, b);
  for (VkBuffer b : writes) {
    hazard = hazard || Contains(written_since_barrier_, b) || Contains(read_since_barrier_, b);
  }
  if (hazard) Barrier();
  for (VkBuffer b : reads) {
    if (!Contains(read_since_barrier_, b)) read_since_barrier_.push_back(b);
  }
  for (VkBuffer b : writes) {
    if (!Contains(written_since_barrier_, b)) written_since_barrier_.push_back(b);
  }
}

absl::StatusOr<VkDescriptorSet> CommandStream::AllocateSet(VkDescriptorSetLayout layout) {
  while (true) {
    if (pool_ == pools_.size()) {
      VkDescriptorPoolSize size{};
      size.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      size.descriptorCount = kSetsPerPool * 4;
      VkDescriptorPoolCreateInfo info{};
      info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
      info.maxSets = kSetsPerPool;
      info.poolSizeCount = 1;
      info.pPoolSizes = &size;
      VkDescriptorPool pool = VK_NULL_HANDLE;
      if (absl::Status s = VkCheck(vkCreateDescriptorPool(context_.device(), &info, nullptr, &pool),
                                   "vkCreateDescriptorPool");
          !s.ok()) {
        return s;
      }
      pools_.push_back(pool);
    }
    VkDescriptorSetAllocateInfo info{};
    info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
    info.descriptorPool = pools_[pool_];
    info.descriptorSetCount = 1;
    info.pSetLayouts = &layout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    const VkResult result = vkAllocateDescriptorSets(context_.device(), &info, &set);
    if (result == VK_SUCCESS) return set;
    if (result != VK_ERROR_OUT_OF_POOL_MEMORY && result != VK_ERROR_FRAGMENTED_POOL) {
      return VkCheck(result, "vkAllocateDescriptorSets");
    }
    ++pool_;  // this pool is full: the next one
  }
}

void CommandStream::Dispatch(Kernel kernel, std::span<const Binding> bindings, const void* push,
                             uint32_t push_bytes, uint64_t groups) {
  if (groups == 0 || !Begin()) return;
  const KernelSpec& spec = SpecOf(kernel);
  if (bindings.size() != spec.bindings || push_bytes != spec.push_bytes) {
    spdlog::critical("Vulkan: {} dispatched with {} bindings and {} push bytes", spec.shader,
                     bindings.size(), push_bytes);
    std::abort();
  }
  auto pipeline = pipelines_.Get(kernel);
  if (!pipeline.ok()) return Fail(pipeline.status());
  auto set = AllocateSet((*pipeline)->set_layout);
  if (!set.ok()) return Fail(set.status());

  VkDescriptorBufferInfo infos[4];
  VkWriteDescriptorSet writes[4];
  std::vector<VkBuffer> read_buffers;
  std::vector<VkBuffer> write_buffers;
  for (size_t i = 0; i < bindings.size(); ++i) {
    infos[i] = {bindings[i].buffer->handle(), bindings[i].aligned_offset, bindings[i].range};
    writes[i] = {};
    writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[i].dstSet = *set;
    writes[i].dstBinding = static_cast<uint32_t>(i);
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    if ((spec.write_mask >> i) & 1u) {
      write_buffers.push_back(bindings[i].buffer->handle());
    } else {
      read_buffers.push_back(bindings[i].buffer->handle());
    }
  }
  vkUpdateDescriptorSets(context_.device(), static_cast<uint32_t>(bindings.size()), writes, 0,
                         nullptr);
  Track(read_buffers, write_buffers);

  const uint32_t* max_count = context_.properties().limits.maxComputeWorkGroupCount;
  const uint64_t x = std::min<uint64_t>(groups, max_count[0]);
  const uint64_t y = (groups + x - 1) / x;
  if (y > max_count[1]) {
    return Fail(absl::ResourceExhaustedError(absl::StrCat(
        "Vulkan: ", spec.shader, " needs ", groups, " workgroups, more than the device's grid")));
  }
  vkCmdBindPipeline(commands_, VK_PIPELINE_BIND_POINT_COMPUTE, (*pipeline)->pipeline);
  vkCmdBindDescriptorSets(commands_, VK_PIPELINE_BIND_POINT_COMPUTE, (*pipeline)->layout, 0, 1,
                          &*set, 0, nullptr);
  vkCmdPushConstants(commands_, (*pipeline)->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes,
                     push);
  vkCmdDispatch(commands_, static_cast<uint32_t>(x), static_cast<uint32_t>(y), 1);
}

void CommandStream::CopyBuffer(const GpuBuffer& src, uint64_t src_offset, const GpuBuffer& dst,
                               uint64_t dst_offset, uint64_t bytes) {
  if (bytes == 0 || !Begin()) return;
  const VkBuffer r = src.handle();
  const VkBuffer w = dst.handle();
  Track(std::span<const VkBuffer>(&r, 1), std::span<const VkBuffer>(&w, 1));
  const VkBufferCopy region{src_offset, dst_offset, bytes};
  vkCmdCopyBuffer(commands_, r, w, 1, &region);
}

void CommandStream::Fill(const GpuBuffer& dst, uint64_t offset, uint64_t bytes, uint32_t value) {
  if (bytes == 0 || !Begin()) return;
  const VkBuffer w = dst.handle();
  Track({}, std::span<const VkBuffer>(&w, 1));
  vkCmdFillBuffer(commands_, w, offset, bytes, value);
}

void CommandStream::Upload(const GpuBuffer& dst, uint64_t offset, const void* data,
                           uint64_t bytes) {
  const auto* src = static_cast<const uint8_t*>(data);
  while (bytes > 0 && error_.ok()) {
    uint64_t room = upload_->bytes() - upload_used_;
    if (room < std::min(bytes, kMaxUploadBytes)) {
      // Wait until the staged data is consumed; then grow the area if this upload wants more.
      if (!Flush().ok()) return;
      if (upload_->bytes() < std::min(bytes, kMaxUploadBytes)) {
        auto bigger = GpuBuffer::Create(
            context_, std::min(RoundUp(bytes, 1 << 20), kMaxUploadBytes), GpuBuffer::Kind::kUpload);
        if (!bigger.ok()) return Fail(bigger.status());
        upload_ = *std::move(bigger);
      }
      room = upload_->bytes() - upload_used_;
    }
    const uint64_t piece = std::min(bytes, room);
    if (!Begin()) return;
    std::memcpy(static_cast<uint8_t*>(upload_->mapped()) + upload_used_, src, piece);
    const VkBuffer w = dst.handle();
    Track({}, std::span<const VkBuffer>(&w, 1));
    const VkBufferCopy region{upload_used_, offset, piece};
    vkCmdCopyBuffer(commands_, upload_->handle(), w, 1, &region);
    upload_used_ = RoundUp(upload_used_ + piece, 16);
    src += piece;
    offset += piece;
    bytes -= piece;
  }
}

void CommandStream::Download(const GpuBuffer& src, uint64_t offset, void* data, uint64_t bytes) {
  if (bytes == 0) return;
  if (readback_ == nullptr || readback_->bytes() < bytes) {
    if (!Flush().ok()) {
      std::memset(data, 0, bytes);
      return;
    }
    auto buffer = GpuBuffer::Create(context_, RoundUp(bytes, 1 << 16), GpuBuffer::Kind::kReadback);
    if (!buffer.ok()) {
      Fail(buffer.status());
      std::memset(data, 0, bytes);
      return;
    }
    readback_ = *std::move(buffer);
  }
  CopyBuffer(src, offset, *readback_, 0, bytes);
  if (!Flush().ok()) {
    std::memset(data, 0, bytes);
    return;
  }
  std::memcpy(data, readback_->mapped(), bytes);
}

void CommandStream::Retire(std::unique_ptr<GpuBuffer> buffer) {
  if (recording_) retired_.push_back(std::move(buffer));
}

absl::Status CommandStream::Flush() {
  if (!recording_) return error_;
  recording_ = false;
  // Transfers into readback memory become visible to the host.
  VkMemoryBarrier barrier{};
  barrier.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  barrier.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  barrier.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(commands_,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &barrier, 0, nullptr, 0, nullptr);
  absl::Status status = VkCheck(vkEndCommandBuffer(commands_), "vkEndCommandBuffer");
  if (status.ok()) {
    VkSubmitInfo submit{};
    submit.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &commands_;
    // An injected fault (vulkan_context.h) stands in for the driver's answer.
    VkResult submitted = context_.InjectedResult(VulkanCall::kQueueSubmit);
    if (submitted == VK_SUCCESS) submitted = vkQueueSubmit(context_.queue(), 1, &submit, fence_);
    status = VkCheck(submitted, "vkQueueSubmit");
    if (status.ok()) {
      VkResult waited = vkWaitForFences(context_.device(), 1, &fence_, VK_TRUE, UINT64_MAX);
      if (waited == VK_SUCCESS) waited = context_.InjectedResult(VulkanCall::kWaitForFences);
      status = VkCheck(waited, "vkWaitForFences");
      vkResetFences(context_.device(), 1, &fence_);
    }
  }
  vkResetCommandBuffer(commands_, 0);
  for (VkDescriptorPool pool : pools_) vkResetDescriptorPool(context_.device(), pool, 0);
  pool_ = 0;
  upload_used_ = 0;
  retired_.clear();
  if (!status.ok()) Fail(status);
  return error_;
}

}  // namespace shardrun
