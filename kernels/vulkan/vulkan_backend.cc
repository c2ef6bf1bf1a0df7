#include "kernels/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/device_failure.h"
#include "kernels/quantize.h"
#include "kernels/vulkan/weight_layout.h"
#include "model/tensor_view.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// Operations cannot return a Status (the Backend interface); a call that breaks their
// contract is a bug in the caller, as in the CPU backend.
void Require(bool ok, const char* op, const char* what) {
  if (ok) return;
  spdlog::critical("VulkanBackend::{}: {}", op, what);
  std::abort();
}

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Push-constant blocks, field for field as the shaders declare them.
struct MatMulF32Push {
  uint32_t rows, cols, n, w_base, x_base, out_base, out_stride;
};
struct MatMulF16Push {
  uint32_t rows, cols, n, w_base, w_stride, x_base, out_base, out_stride;
};
struct MatMulQuantPush {
  uint32_t rows, cols, n, d_offset, out_base, out_stride;
};
struct QuantizePush {
  uint32_t blocks, x_base;
};
struct EmbedPush {
  uint32_t type, cols, n, row_begin, rows, w_stride, d_offset, out_base, tok_base;
};
struct RmsNormPush {
  uint32_t size, n, x_base, gain_base, out_base;
  float eps;
};
struct RopePush {
  uint32_t n, n_heads, head_size, x_base, tab_base;
};
struct AttentionPush {
  uint32_t n, pos0, n_heads, head_size, kv_dim, group, q_base, out_base;
  float root;
};
struct SwiGluPush {
  uint32_t count, gate_base, up_base;
};
struct AddScaledPush {
  uint32_t count, acc_base, x_base;
  float scale;
};

constexpr uint32_t kWorkgroup = 64;     // local size of the element-wise shaders
constexpr uint32_t kMaxHeadSize = 256;  // attention.comp's MAX_HEAD

uint32_t EmbedTypeCode(TensorType type) {
  switch (type) {
    case TensorType::kF32:
      return 0;
    case TensorType::kF16:
      return 1;
    case TensorType::kQ8_0:
      return 2;
    default:
      return 3;  // kQ4_0
  }
}

}  // namespace

// A float32 array in device memory. `version` counts the operations that wrote it, so a
// quantized copy of it can be reused while it is unchanged.
class VulkanBackend::Buffer final : public DeviceBuffer {
 public:
  Buffer(int64_t size, std::unique_ptr<GpuBuffer> gpu, CommandStream& stream)
      : DeviceBuffer(size), gpu_(std::move(gpu)), stream_(stream) {}
  ~Buffer() override { stream_.Retire(std::move(gpu_)); }
  const GpuBuffer& gpu() const { return *gpu_; }
  uint64_t version() const { return version_; }
  void Touch() { ++version_; }

 private:
  std::unique_ptr<GpuBuffer> gpu_;
  CommandStream& stream_;
  uint64_t version_ = 0;
};

// A weight: pieces of rows in device memory (weight_layout.h), a float32 copy for 1-row
// tensors (norm gains) of other types, or a CPU-backend weight for types without a shader.
class VulkanBackend::Weight final : public DeviceWeight {
 public:
  struct Piece {
    PieceLayout layout;
    std::unique_ptr<GpuBuffer> buffer;
  };
  Weight(TensorType type, int64_t rows, int64_t cols) : DeviceWeight(type, rows, cols) {}
  std::vector<Piece> pieces;
  std::unique_ptr<GpuBuffer> gain;    // float32 values of a 1-row tensor
  std::unique_ptr<DeviceWeight> cpu;  // types without a shader
};

const GpuBuffer& VulkanBackend::Gpu(const DeviceBuffer& b) {
  return static_cast<const Buffer&>(b).gpu();
}

absl::Status VulkanBackend::Named(absl::Status status) const {
  return NameFailedDevice(std::move(status), context_->info().name);
}

absl::StatusOr<std::unique_ptr<VulkanBackend>> VulkanBackend::Create(
    const VulkanBackendOptions& options) {
  std::unique_ptr<VulkanBackend> backend(new VulkanBackend());
  auto context = VulkanContext::Create({options.device_index, options.validation});
  if (!context.ok()) return context.status();
  backend->context_ = *std::move(context);
  auto pipelines = Pipelines::Create(*backend->context_);
  if (!pipelines.ok()) return pipelines.status();
  backend->pipelines_ = *std::move(pipelines);
  uint64_t max_binding = backend->context_->properties().limits.maxStorageBufferRange;
  uint64_t requested = options.max_binding_bytes;
  if (const char* env = std::getenv("SHARDRUN_VK_MAX_BINDING_BYTES"); env != nullptr) {
    if (!absl::SimpleAtoi(env, &requested)) {
      return absl::InvalidArgumentError(
          absl::StrCat("SHARDRUN_VK_MAX_BINDING_BYTES=", env, " is not a byte count"));
    }
  }
  if (requested > 0) {
    if (requested < 1024) {
      return absl::InvalidArgumentError("Vulkan: the binding limit must be at least 1024 bytes");
    }
    max_binding = std::min(max_binding, requested);
  }
  auto stream = CommandStream::Create(*backend->context_, *backend->pipelines_, max_binding);
  if (!stream.ok()) return stream.status();
  backend->stream_ = *std::move(stream);
  auto cpu = CpuBackend::Create(std::max(1, options.cpu_threads));
  if (!cpu.ok()) return cpu.status();
  backend->cpu_ = *std::move(cpu);
  return backend;
}

VulkanBackend::~VulkanBackend() {
  if (stream_ != nullptr) stream_->Flush().IgnoreError();
  // Scratch buffers go before the stream and the device.
  act_q_.reset();
  act_d_.reset();
  tokens_.reset();
  rope_table_.reset();
  copy_scratch_.reset();
  stream_.reset();
  pipelines_.reset();
}

std::string VulkanBackend::name() const { return absl::StrCat("vulkan-", context_->info().name); }

// --- Memory ----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<DeviceBuffer>> VulkanBackend::Allocate(int64_t floats) {
  if (floats < 0) {
    return absl::InvalidArgumentError(absl::StrCat("Vulkan: cannot allocate ", floats, " floats"));
  }
  if (!stream_->status().ok()) return Named(stream_->status());
  auto gpu =
      GpuBuffer::Create(*context_, static_cast<VkDeviceSize>(floats) * 4, GpuBuffer::Kind::kDevice);
  if (!gpu.ok()) return Named(gpu.status());
  return std::make_unique<Buffer>(floats, *std::move(gpu), *stream_);
}

absl::StatusOr<std::unique_ptr<DeviceWeight>> VulkanBackend::LoadWeight(const TensorView& view) {
  const auto fail = [&view](const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat("Vulkan backend: tensor '", view.name, "' (",
                                                   std::string(TensorTypeName(view.type)),
                                                   "): ", problem));
  };
  if (view.shape.empty() || view.cols() <= 0 || view.rows() <= 0) return fail("empty shape");
  if (view.data == nullptr) return fail("no data");
  if (!stream_->status().ok()) return Named(stream_->status());
  const int64_t rows = view.rows();
  const int64_t cols = view.cols();
  auto weight = std::make_unique<Weight>(view.type, rows, cols);

  if (!ShadersSupport(view.type)) {
    auto cpu = cpu_->LoadWeight(view);  // checks the shape against the data
    if (!cpu.ok()) return cpu.status();
    weight->cpu = *std::move(cpu);
  } else {
    if (cols % BlockElements(view.type) != 0) {
      return fail(absl::StrCat("rows of ", cols, " values are not whole blocks"));
    }
    const size_t needed = TensorBytes(view.type, cols) * static_cast<size_t>(rows);
    if (view.bytes < needed) {
      return fail(absl::StrCat("holds ", view.bytes, " bytes, its shape needs ", needed));
    }
    auto pieces = SplitRows(view.type, rows, cols, stream_->max_binding_bytes());
    if (!pieces.ok()) return fail(std::string(pieces.status().message()));
    std::vector<uint8_t> packed;
    for (const PieceLayout& layout : *pieces) {
      auto buffer = GpuBuffer::Create(*context_, layout.bytes, GpuBuffer::Kind::kDevice);
      if (!buffer.ok()) return Named(buffer.status());
      packed.resize(layout.bytes);
      PackPiece(view.type, view.data, cols, layout, packed.data());
      stream_->Upload(**buffer, 0, packed.data(), layout.bytes);
      weight->pieces.push_back({layout, *std::move(buffer)});
    }
  }
  if (rows == 1 && (view.type != TensorType::kF32 || weight->pieces.empty())) {
    // Norm gains are read as float32 whatever their stored type.
    std::vector<float> values(static_cast<size_t>(cols));
    DequantizeRow(view.type, view.data, values, view.group_scales, view.group_size);
    auto gain = GpuBuffer::Create(*context_, values.size() * 4, GpuBuffer::Kind::kDevice);
    if (!gain.ok()) return Named(gain.status());
    stream_->Upload(**gain, 0, values.data(), values.size() * 4);
    weight->gain = *std::move(gain);
  }
  // Uploads finish here, so a failure is this call's.
  if (absl::Status s = stream_->Flush(); !s.ok()) return Named(std::move(s));
  return weight;
}

void VulkanBackend::Write(DeviceBuffer& dst, int64_t offset, std::span<const float> src) {
  Require(offset >= 0 && offset + static_cast<int64_t>(src.size()) <= dst.size(), "Write",
          "range outside the buffer");
  static_cast<Buffer&>(dst).Touch();
  stream_->Upload(Gpu(dst), static_cast<uint64_t>(offset) * 4, src.data(), src.size_bytes());
}

void VulkanBackend::Read(const DeviceBuffer& src, int64_t offset, std::span<float> dst) {
  Require(offset >= 0 && offset + static_cast<int64_t>(dst.size()) <= src.size(), "Read",
          "range outside the buffer");
  stream_->Download(Gpu(src), static_cast<uint64_t>(offset) * 4, dst.data(), dst.size_bytes());
}

absl::Status VulkanBackend::Synchronize() { return Named(stream_->Flush()); }

const GpuBuffer* VulkanBackend::Scratch(std::unique_ptr<GpuBuffer>& slot, uint64_t bytes) {
  if (slot != nullptr && slot->bytes() >= bytes) return slot.get();
  // Twice the request, so that growing prefill batches do not reallocate every time.
  auto buffer =
      GpuBuffer::Create(*context_, std::max<uint64_t>(bytes * 2, 4096), GpuBuffer::Kind::kDevice);
  if (!buffer.ok()) {
    stream_->Fail(buffer.status());
    return nullptr;
  }
  if (slot != nullptr) stream_->Retire(std::move(slot));
  slot = *std::move(buffer);
  return slot.get();
}

int VulkanBackend::TokensPerChunk(std::initializer_list<uint64_t> bytes_per_token, int n) const {
  // Room for the alignment shift of a binding's start.
  const uint64_t slack = context_->properties().limits.minStorageBufferOffsetAlignment + 16;
  const uint64_t room =
      stream_->max_binding_bytes() - std::min(stream_->max_binding_bytes(), slack);
  uint64_t tokens = static_cast<uint64_t>(n);
  for (uint64_t b : bytes_per_token) {
    if (b > 0) tokens = std::min(tokens, room / b);
  }
  return static_cast<int>(tokens);
}

int64_t VulkanBackend::ElementsPerChunk() const {
  const uint64_t slack = context_->properties().limits.minStorageBufferOffsetAlignment + 16;
  return static_cast<int64_t>((stream_->max_binding_bytes() - slack) / 4);
}

// --- Matrix product --------------------------------------------------------------------------

void VulkanBackend::MatMul(DeviceBuffer& out, const DeviceWeight& weight, const DeviceBuffer& in,
                           int n) {
  const auto& w = static_cast<const Weight&>(weight);
  const int64_t rows = w.rows();
  const int64_t cols = w.cols();
  Require(n >= 1, "MatMul", "no tokens");
  Require(in.size() >= n * cols && out.size() >= n * rows, "MatMul", "buffer too small");
  Require(&out != &in, "MatMul", "output aliases input");
  if (w.cpu != nullptr) return CpuMatMul(out, w, in, n);
  static_cast<Buffer&>(out).Touch();
  const bool quantized = w.type() == TensorType::kQ8_0 || w.type() == TensorType::kQ4_0;
  const uint64_t in_row = static_cast<uint64_t>(cols) * 4;
  const uint64_t out_row = static_cast<uint64_t>(rows) * 4;
  const int chunk =
      TokensPerChunk({in_row, out_row, quantized ? static_cast<uint64_t>(cols) : 0}, n);
  if (chunk < 1) {
    return stream_->Fail(absl::ResourceExhaustedError(
        absl::StrCat("Vulkan: a matrix product row of ", rows, " x ", cols,
                     " does not fit the device's storage binding range")));
  }
  const auto& input = static_cast<const Buffer&>(in);
  for (int t0 = 0; t0 < n; t0 += chunk) {
    const int tn = std::min(chunk, n - t0);
    const Binding x = stream_->Bind(Gpu(in), t0 * in_row, tn * in_row);
    const Binding o = stream_->Bind(Gpu(out), t0 * out_row, tn * out_row);
    Binding xq, xd;
    if (quantized) {
      const uint64_t blocks = static_cast<uint64_t>(tn) * cols / 32;
      const GpuBuffer* q = Scratch(act_q_, blocks * 32);
      const GpuBuffer* d = Scratch(act_d_, blocks * 4);
      if (q == nullptr || d == nullptr) return;
      xq = stream_->Bind(*q, 0, blocks * 32);
      xd = stream_->Bind(*d, 0, blocks * 4);
      // q, k and v (gate and up) read one input: quantize it once.
      const bool reuse = chunk >= n && quantized_buffer_ == &in &&
                         quantized_version_ == input.version() &&
                         quantized_floats_ == static_cast<int64_t>(n) * cols;
      if (!reuse) {
        const QuantizePush push{static_cast<uint32_t>(blocks), x.shift};
        const Binding b[] = {x, xq, xd};
        stream_->Dispatch(Kernel::kQuantizeQ8_0, b, &push, sizeof(push),
                          CeilDiv(blocks, kWorkgroup));
        quantized_buffer_ = chunk >= n ? &in : nullptr;
        quantized_version_ = input.version();
        quantized_floats_ = static_cast<int64_t>(n) * cols;
      }
    }
    for (const Weight::Piece& piece : w.pieces) {
      const PieceLayout& p = piece.layout;
      const Binding wb = stream_->Bind(*piece.buffer, 0, p.bytes);
      const uint64_t groups = static_cast<uint64_t>(p.rows) * tn;
      const auto out_base = static_cast<uint32_t>(o.shift + p.row_begin);
      switch (w.type()) {
        case TensorType::kF32: {
          const MatMulF32Push push{static_cast<uint32_t>(p.rows),
                                   static_cast<uint32_t>(cols),
                                   static_cast<uint32_t>(tn),
                                   wb.shift,
                                   x.shift,
                                   out_base,
                                   static_cast<uint32_t>(rows)};
          const Binding b[] = {wb, x, o};
          stream_->Dispatch(Kernel::kMatMulF32, b, &push, sizeof(push), groups);
          break;
        }
        case TensorType::kF16: {
          const MatMulF16Push push{static_cast<uint32_t>(p.rows),
                                   static_cast<uint32_t>(cols),
                                   static_cast<uint32_t>(tn),
                                   wb.shift,
                                   p.w_stride,
                                   x.shift,
                                   out_base,
                                   static_cast<uint32_t>(rows)};
          const Binding b[] = {wb, x, o};
          stream_->Dispatch(Kernel::kMatMulF16, b, &push, sizeof(push), groups);
          break;
        }
        default: {
          const MatMulQuantPush push{static_cast<uint32_t>(p.rows),
                                     static_cast<uint32_t>(cols),
                                     static_cast<uint32_t>(tn),
                                     p.d_offset,
                                     out_base,
                                     static_cast<uint32_t>(rows)};
          const Binding b[] = {wb, xq, xd, o};
          stream_->Dispatch(
              w.type() == TensorType::kQ8_0 ? Kernel::kMatMulQ8_0 : Kernel::kMatMulQ4_0, b, &push,
              sizeof(push), groups);
          break;
        }
      }
    }
  }
}

DeviceBuffer* VulkanBackend::CpuScratch(std::unique_ptr<DeviceBuffer>& slot, int64_t floats) {
  if (slot == nullptr || slot->size() < floats) {
    auto buffer = cpu_->Allocate(floats);
    if (!buffer.ok()) {
      stream_->Fail(buffer.status());
      return nullptr;
    }
    slot = *std::move(buffer);
  }
  return slot.get();
}

void VulkanBackend::CpuMatMul(DeviceBuffer& out, const Weight& w, const DeviceBuffer& in, int n) {
  if (fallback_logged_.insert(w.type()).second) {
    spdlog::info("Vulkan: no shader for {} weights; their products run on the CPU backend",
                 std::string(TensorTypeName(w.type())));
  }
  const int64_t in_floats = n * w.cols();
  const int64_t out_floats = n * w.rows();
  DeviceBuffer* cpu_in = CpuScratch(cpu_in_, in_floats);
  DeviceBuffer* cpu_out = CpuScratch(cpu_out_, out_floats);
  if (cpu_in == nullptr || cpu_out == nullptr) return;
  host_.resize(static_cast<size_t>(std::max(in_floats, out_floats)));
  Read(in, 0, std::span<float>(host_.data(), in_floats));  // flushes the recorded work
  if (!stream_->status().ok()) return;
  cpu_->Write(*cpu_in, 0, std::span<const float>(host_.data(), in_floats));
  cpu_->MatMul(*cpu_out, *w.cpu, *cpu_in, n);
  cpu_->Read(*cpu_out, 0, std::span<float>(host_.data(), out_floats));
  Write(out, 0, std::span<const float>(host_.data(), out_floats));
}

void VulkanBackend::CpuEmbed(DeviceBuffer& out, const Weight& w, std::span<const int32_t> tokens) {
  if (fallback_logged_.insert(w.type()).second) {
    spdlog::info("Vulkan: no shader for {} weights; their lookups run on the CPU backend",
                 std::string(TensorTypeName(w.type())));
  }
  const auto floats = static_cast<int64_t>(tokens.size()) * w.cols();
  DeviceBuffer* cpu_out = CpuScratch(cpu_out_, floats);
  if (cpu_out == nullptr) return;
  host_.resize(static_cast<size_t>(floats));
  cpu_->Embed(*cpu_out, *w.cpu, tokens);
  cpu_->Read(*cpu_out, 0, std::span<float>(host_.data(), floats));
  Write(out, 0, std::span<const float>(host_.data(), floats));
}

// --- Other operations ------------------------------------------------------------------------

void VulkanBackend::Embed(DeviceBuffer& out, const DeviceWeight& table,
                          std::span<const int32_t> tokens) {
  const auto& w = static_cast<const Weight&>(table);
  const int64_t cols = w.cols();
  const auto n = static_cast<int64_t>(tokens.size());
  Require(out.size() >= n * cols, "Embed", "buffer too small");
  for (int32_t t : tokens) Require(t >= 0 && t < w.rows(), "Embed", "token id outside the table");
  if (n == 0) return;
  if (w.cpu != nullptr) return CpuEmbed(out, w, tokens);
  static_cast<Buffer&>(out).Touch();
  const GpuBuffer* ids = Scratch(tokens_, static_cast<uint64_t>(n) * 4);
  if (ids == nullptr) return;
  stream_->Upload(*ids, 0, tokens.data(), tokens.size_bytes());
  const uint64_t out_row = static_cast<uint64_t>(cols) * 4;
  const int chunk = TokensPerChunk({out_row, 4}, static_cast<int>(n));
  if (chunk < 1) {
    return stream_->Fail(absl::ResourceExhaustedError(
        "Vulkan: an embedding row does not fit the device's storage binding range"));
  }
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t tn = std::min<int64_t>(chunk, n - t0);
    const Binding o = stream_->Bind(Gpu(out), t0 * out_row, tn * out_row);
    const Binding tok = stream_->Bind(*ids, t0 * 4, tn * 4);
    for (const Weight::Piece& piece : w.pieces) {
      const PieceLayout& p = piece.layout;
      const EmbedPush push{EmbedTypeCode(w.type()),
                           static_cast<uint32_t>(cols),
                           static_cast<uint32_t>(tn),
                           static_cast<uint32_t>(p.row_begin),
                           static_cast<uint32_t>(p.rows),
                           p.w_stride,
                           p.d_offset,
                           o.shift,
                           tok.shift};
      const Binding b[] = {stream_->Bind(*piece.buffer, 0, p.bytes), tok, o};
      stream_->Dispatch(Kernel::kEmbed, b, &push, sizeof(push),
                        CeilDiv(static_cast<uint64_t>(tn * cols), kWorkgroup));
    }
  }
}

void VulkanBackend::RmsNorm(DeviceBuffer& out, const DeviceBuffer& in, const DeviceWeight& gain,
                            int n, float eps) {
  const auto& g = static_cast<const Weight&>(gain);
  const int64_t size = g.cols();
  Require(in.size() >= n * size && out.size() >= n * size, "RmsNorm", "buffer too small");
  static_cast<Buffer&>(out).Touch();
  const GpuBuffer& gains = g.gain != nullptr ? *g.gain : *g.pieces.front().buffer;
  const uint64_t row = static_cast<uint64_t>(size) * 4;
  const int chunk = TokensPerChunk({row}, n);
  if (chunk < 1) {
    return stream_->Fail(absl::ResourceExhaustedError(
        "Vulkan: a normalized row does not fit the device's storage binding range"));
  }
  const Binding gb = stream_->Bind(gains, 0, row);
  for (int t0 = 0; t0 < n; t0 += chunk) {
    const int tn = std::min(chunk, n - t0);
    const Binding x = stream_->Bind(Gpu(in), t0 * row, tn * row);
    const Binding o = stream_->Bind(Gpu(out), t0 * row, tn * row);
    const RmsNormPush push{
        static_cast<uint32_t>(size), static_cast<uint32_t>(tn), x.shift, gb.shift, o.shift, eps};
    const Binding b[] = {x, gb, o};
    stream_->Dispatch(Kernel::kRmsNorm, b, &push, sizeof(push), static_cast<uint64_t>(tn));
  }
}

void VulkanBackend::Rope(DeviceBuffer& x, int n, int n_heads, int head_size, int pos0,
                         float freq_base) {
  const int64_t width = static_cast<int64_t>(n_heads) * head_size;
  Require(head_size > 0 && head_size % 2 == 0, "Rope", "head size must be even");
  Require(x.size() >= n * width, "Rope", "buffer too small");
  static_cast<Buffer&>(x).Touch();
  const int half = head_size / 2;
  const uint64_t table_bytes = static_cast<uint64_t>(n) * half * 8;
  const GpuBuffer* previous = rope_table_.get();
  const GpuBuffer* table = Scratch(rope_table_, table_bytes);
  if (table == nullptr) return;
  const bool cached = table == previous && rope_key_.n == n && rope_key_.head_size == head_size &&
                      rope_key_.pos0 == pos0 && rope_key_.freq_base == freq_base;
  if (!cached) {
    // The CPU backend's angles (cpu_ops.cc RopeRow), computed here: shader sin/cos are not
    // accurate far from zero.
    rope_host_.resize(static_cast<size_t>(n) * half * 2);
    for (int i = 0; i < head_size; i += 2) {
      const float freq =
          1.0f / powf(freq_base, static_cast<float>(i) / static_cast<float>(head_size));
      for (int t = 0; t < n; ++t) {
        const float angle = static_cast<float>(pos0 + t) * freq;
        rope_host_[(static_cast<size_t>(t) * half + i / 2) * 2] = cosf(angle);
        rope_host_[(static_cast<size_t>(t) * half + i / 2) * 2 + 1] = sinf(angle);
      }
    }
    stream_->Upload(*table, 0, rope_host_.data(), table_bytes);
    rope_key_ = {n, head_size, pos0, freq_base};
  }
  const uint64_t row = static_cast<uint64_t>(width) * 4;
  const uint64_t table_row = static_cast<uint64_t>(half) * 8;
  const int chunk = TokensPerChunk({row, table_row}, n);
  if (chunk < 1) {
    return stream_->Fail(absl::ResourceExhaustedError(
        "Vulkan: a rotated row does not fit the device's storage binding range"));
  }
  for (int t0 = 0; t0 < n; t0 += chunk) {
    const int tn = std::min(chunk, n - t0);
    const Binding xb = stream_->Bind(Gpu(x), t0 * row, tn * row);
    const Binding tb = stream_->Bind(*table, t0 * table_row, tn * table_row);
    // The offset is a multiple of 8 bytes and the alignment a power of two, so the shift is
    // a whole number of (cos, sin) pairs.
    const RopePush push{static_cast<uint32_t>(tn), static_cast<uint32_t>(n_heads),
                        static_cast<uint32_t>(head_size), xb.shift, tb.shift / 2};
    const Binding b[] = {xb, tb};
    stream_->Dispatch(Kernel::kRope, b, &push, sizeof(push),
                      CeilDiv(static_cast<uint64_t>(tn) * n_heads * half, kWorkgroup));
  }
}

void VulkanBackend::Attention(DeviceBuffer& out, const DeviceBuffer& q, const DeviceBuffer& k,
                              const DeviceBuffer& v, DeviceBuffer& k_cache, DeviceBuffer& v_cache,
                              const AttentionShape& s) {
  Require(s.n_tokens >= 1 && s.n_heads > 0 && s.n_kv_heads > 0 && s.head_size > 0, "Attention",
          "empty shape");
  Require(s.n_heads % s.n_kv_heads == 0, "Attention", "query heads not a multiple of kv heads");
  Require(s.pos0 >= 0 && s.pos0 + s.n_tokens <= s.context_length, "Attention",
          "positions beyond the context length");
  const int n = s.n_tokens;
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * s.head_size;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * s.head_size;
  Require(q.size() >= n * q_dim && out.size() >= n * q_dim && k.size() >= n * kv_dim &&
              v.size() >= n * kv_dim && k_cache.size() >= s.context_length * kv_dim &&
              v_cache.size() >= s.context_length * kv_dim,
          "Attention", "buffer too small");
  Require(&out != &q, "Attention", "output aliases the queries");
  if (static_cast<uint32_t>(s.head_size) > kMaxHeadSize) {
    return stream_->Fail(absl::UnimplementedError(absl::StrCat(
        "Vulkan: attention supports head sizes up to ", kMaxHeadSize, ", not ", s.head_size)));
  }
  static_cast<Buffer&>(out).Touch();
  static_cast<Buffer&>(k_cache).Touch();
  static_cast<Buffer&>(v_cache).Touch();
  const uint64_t kv_bytes = static_cast<uint64_t>(n) * kv_dim * 4;
  const uint64_t at = static_cast<uint64_t>(s.pos0) * kv_dim * 4;
  stream_->CopyBuffer(Gpu(k), 0, Gpu(k_cache), at, kv_bytes);
  stream_->CopyBuffer(Gpu(v), 0, Gpu(v_cache), at, kv_bytes);

  const uint64_t cache_bytes = static_cast<uint64_t>(s.pos0 + n) * kv_dim * 4;
  if (!stream_->Fits(0, cache_bytes)) {
    return stream_->Fail(
        absl::UnimplementedError(absl::StrCat("Vulkan: a KV cache of ", cache_bytes,
                                              " bytes per layer exceeds the device's storage "
                                              "binding range of ",
                                              stream_->max_binding_bytes(), " bytes")));
  }
  const Binding kb = stream_->Bind(Gpu(k_cache), 0, cache_bytes);
  const Binding vb = stream_->Bind(Gpu(v_cache), 0, cache_bytes);
  const uint64_t row = static_cast<uint64_t>(q_dim) * 4;
  const int chunk = TokensPerChunk({row}, n);
  if (chunk < 1) {
    return stream_->Fail(absl::ResourceExhaustedError(
        "Vulkan: a query row does not fit the device's storage binding range"));
  }
  for (int t0 = 0; t0 < n; t0 += chunk) {
    const int tn = std::min(chunk, n - t0);
    const Binding qb = stream_->Bind(Gpu(q), t0 * row, tn * row);
    const Binding ob = stream_->Bind(Gpu(out), t0 * row, tn * row);
    const AttentionPush push{static_cast<uint32_t>(tn),
                             static_cast<uint32_t>(s.pos0 + t0),
                             static_cast<uint32_t>(s.n_heads),
                             static_cast<uint32_t>(s.head_size),
                             static_cast<uint32_t>(kv_dim),
                             static_cast<uint32_t>(s.n_heads / s.n_kv_heads),
                             qb.shift,
                             ob.shift,
                             sqrtf(static_cast<float>(s.head_size))};
    const Binding b[] = {qb, kb, vb, ob};
    stream_->Dispatch(Kernel::kAttention, b, &push, sizeof(push),
                      static_cast<uint64_t>(tn) * s.n_heads);
  }
}

void VulkanBackend::SwiGlu(DeviceBuffer& gate, const DeviceBuffer& up, int64_t count) {
  Require(count >= 0 && gate.size() >= count && up.size() >= count, "SwiGlu", "buffer too small");
  static_cast<Buffer&>(gate).Touch();
  const int64_t chunk = ElementsPerChunk();
  for (int64_t i0 = 0; i0 < count; i0 += chunk) {
    const int64_t c = std::min(chunk, count - i0);
    const Binding g = stream_->Bind(Gpu(gate), i0 * 4, c * 4);
    const Binding u = stream_->Bind(Gpu(up), i0 * 4, c * 4);
    const SwiGluPush push{static_cast<uint32_t>(c), g.shift, u.shift};
    const Binding b[] = {g, u};
    stream_->Dispatch(Kernel::kSwiGlu, b, &push, sizeof(push),
                      CeilDiv(static_cast<uint64_t>(c), kWorkgroup));
  }
}

void VulkanBackend::AddScaledChunks(DeviceBuffer& acc, int64_t acc_offset, const DeviceBuffer& x,
                                    int64_t count, float scale) {
  static_cast<Buffer&>(acc).Touch();
  const int64_t chunk = ElementsPerChunk();
  for (int64_t i0 = 0; i0 < count; i0 += chunk) {
    const int64_t c = std::min(chunk, count - i0);
    const Binding a = stream_->Bind(Gpu(acc), (acc_offset + i0) * 4, c * 4);
    const Binding xb = stream_->Bind(Gpu(x), i0 * 4, c * 4);
    const AddScaledPush push{static_cast<uint32_t>(c), a.shift, xb.shift, scale};
    const Binding b[] = {a, xb};
    stream_->Dispatch(Kernel::kAddScaled, b, &push, sizeof(push),
                      CeilDiv(static_cast<uint64_t>(c), kWorkgroup));
  }
}

void VulkanBackend::Add(DeviceBuffer& acc, const DeviceBuffer& x, int64_t count) {
  Require(count >= 0 && acc.size() >= count && x.size() >= count, "Add", "buffer too small");
  AddScaledChunks(acc, 0, x, count, 1.0f);  // 1 * x is exact
}

void VulkanBackend::AddScaled(DeviceBuffer& acc, int64_t acc_offset, const DeviceBuffer& x,
                              int64_t count, float scale) {
  Require(count >= 0 && acc_offset >= 0 && acc.size() - acc_offset >= count && x.size() >= count,
          "AddScaled", "buffer too small");
  AddScaledChunks(acc, acc_offset, x, count, scale);
}

void VulkanBackend::Zero(DeviceBuffer& buffer, int64_t count) {
  Require(count >= 0 && buffer.size() >= count, "Zero", "buffer too small");
  static_cast<Buffer&>(buffer).Touch();
  stream_->Fill(Gpu(buffer), 0, static_cast<uint64_t>(count) * 4, 0);
}

void VulkanBackend::Copy(DeviceBuffer& dst, int64_t dst_offset, const DeviceBuffer& src,
                         int64_t src_offset, int64_t count) {
  Require(count >= 0 && dst_offset >= 0 && src_offset >= 0 && dst_offset + count <= dst.size() &&
              src_offset + count <= src.size(),
          "Copy", "range outside the buffer");
  if (count == 0) return;
  static_cast<Buffer&>(dst).Touch();
  const uint64_t bytes = static_cast<uint64_t>(count) * 4;
  const uint64_t from = static_cast<uint64_t>(src_offset) * 4;
  const uint64_t to = static_cast<uint64_t>(dst_offset) * 4;
  const bool overlap = &dst == &src && from < to + bytes && to < from + bytes;
  if (!overlap) return stream_->CopyBuffer(Gpu(src), from, Gpu(dst), to, bytes);
  // vkCmdCopyBuffer forbids overlapping regions: go through a scratch buffer (memmove).
  const GpuBuffer* scratch = Scratch(copy_scratch_, bytes);
  if (scratch == nullptr) return;
  stream_->CopyBuffer(Gpu(src), from, *scratch, 0, bytes);
  stream_->CopyBuffer(*scratch, 0, Gpu(dst), to, bytes);
}

}  // namespace shardrun
