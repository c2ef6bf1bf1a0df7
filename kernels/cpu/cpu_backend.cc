#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/weight_tiles.h"
#include "kernels/quantize.h"
#include "model/tensor_view.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// Below this many multiply-adds an operation runs on the calling thread alone: waking the
// pool would cost more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;
// Matrix rows are handed out in about this many chunks per thread, so a thread that is
// descheduled for a moment does not hold up the whole product.
constexpr int64_t kChunksPerThread = 4;
// Chunks of rows start on multiples of 16 so that two threads never write to one cache line
// of the output.
constexpr int64_t kRowAlignment = 16;

// Operations cannot return a Status (the Backend interface); a call that breaks their
// contract is a bug in the caller, and carrying on would read or write out of bounds.
void Require(bool ok, const char* op, const char* what) {
  if (ok) return;
  spdlog::critical("CpuBackend::{}: {}", op, what);
  std::abort();
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

class CpuBuffer final : public DeviceBuffer {
 public:
  CpuBuffer(int64_t size, AlignedStorage storage)
      : DeviceBuffer(size), storage_(std::move(storage)) {}
  float* data() const { return static_cast<float*>(storage_.data()); }

 private:
  AlignedStorage storage_;
};

float* Data(DeviceBuffer& b) { return static_cast<CpuBuffer&>(b).data(); }
const float* Data(const DeviceBuffer& b) { return static_cast<const CpuBuffer&>(b).data(); }

}  // namespace

// A weight in the mapped model file, used in place, plus for matrices of the types a level
// wants tiled (weight_tiles.h) a tiled copy for the matrix products.
class CpuBackend::Weight final : public DeviceWeight {
 public:
  Weight(const TensorView& view, int64_t row_bytes)
      : DeviceWeight(view.type, view.rows(), view.cols()),
        data_(static_cast<const uint8_t*>(view.data)),
        row_bytes_(row_bytes),
        scales_(view.group_scales),
        group_size_(view.group_size) {}

  // The file's layout (Embed, RmsNorm).
  const uint8_t* data() const { return data_; }
  // What the matrix product reads: the tiled copy if there is one.
  const uint8_t* matmul_data() const {
    return tiles_.data() ? static_cast<const uint8_t*>(tiles_.data()) : data_;
  }
  bool tiled() const { return tiles_.data() != nullptr; }
  void set_tiles(AlignedStorage tiles) { tiles_ = std::move(tiles); }
  const uint8_t* row(int64_t r) const { return data_ + r * row_bytes_; }
  int64_t row_bytes() const { return row_bytes_; }
  const float* scales() const { return scales_; }  // kQ8Group
  int group_size() const { return group_size_; }   // kQ8Group
  // The kQ8Group scales of row r.
  const float* row_scales(int64_t r) const {
    return scales_ == nullptr ? nullptr : scales_ + r * (cols() / group_size_);
  }

 private:
  const uint8_t* data_;
  int64_t row_bytes_;
  const float* scales_;
  int group_size_;
  AlignedStorage tiles_;
};

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(int threads) {
  absl::StatusOr<CpuLevel> level = SelectCpuLevel();
  if (!level.ok()) return level.status();
  return Create(threads, *level);
}

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(int threads, CpuLevel level) {
  if (threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: thread count must be at least 1, got ", threads));
  }
  if (!CpuSupportsLevel(level)) {
    return absl::FailedPreconditionError(
        absl::StrCat("CPU backend: this CPU or build cannot run the ",
                     std::string(CpuLevelName(level)), " kernels"));
  }
  auto backend = std::unique_ptr<CpuBackend>(new CpuBackend(threads, level));
  spdlog::info("CPU backend: {} kernels, {} thread{}", backend->kernels_.name, threads,
               threads == 1 ? "" : "s");
  return backend;
}

CpuBackend::CpuBackend(int threads, CpuLevel level)
    : level_(level), kernels_(KernelsFor(level)), pool_(threads) {}

std::string CpuBackend::name() const {
  return absl::StrCat("cpu-", std::string(kernels_.name), "-x", threads());
}

// --- Memory ----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CpuBackend::Allocate(int64_t floats) {
  if (floats < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CPU backend: cannot allocate ", floats, " floats"));
  }
  AlignedStorage storage;
  if (storage.Reserve<float>(static_cast<size_t>(floats)) == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("CPU backend: out of memory allocating ", floats, " floats"));
  }
  return std::make_unique<CpuBuffer>(floats, std::move(storage));
}

absl::StatusOr<std::unique_ptr<DeviceWeight>> CpuBackend::LoadWeight(const TensorView& view) {
  const auto fail = [&view](std::string_view problem) {
    return absl::InvalidArgumentError(absl::StrCat("CPU backend: tensor '", view.name, "' (",
                                                   std::string(TensorTypeName(view.type)),
                                                   "): ", std::string(problem)));
  };
  if (view.shape.empty() || view.cols() <= 0 || view.rows() <= 0) return fail("empty shape");
  if (view.data == nullptr) return fail("no data");
  const int64_t cols = view.cols();
  int64_t block = BlockElements(view.type);
  if (view.type == TensorType::kQ8Group) {
    if (view.group_size <= 0 || view.group_scales == nullptr) {
      return fail("int8 group tensor without group scales");
    }
    block = view.group_size;
  }
  if (cols % block != 0) {
    return fail(absl::StrCat("rows of ", cols, " values are not whole blocks of ", block));
  }
  const auto row_bytes = static_cast<int64_t>(TensorBytes(view.type, cols));
  if (view.bytes < static_cast<size_t>(row_bytes * view.rows())) {
    return fail(
        absl::StrCat("holds ", view.bytes, " bytes, its shape needs ", row_bytes * view.rows()));
  }
  auto weight = std::make_unique<Weight>(view, row_bytes);
  const bool tile = (view.type == TensorType::kQ4_0 && kernels_.tile_q4_0) ||
                    (view.type == TensorType::kQ8_0 && kernels_.tile_q8_0) ||
                    (FloatRowsTileable(view.type, cols) && kernels_.tile_float);
  const int tile_rows = TileRowsOf(view.type);
  if (tile && view.rows() >= tile_rows) {
    // A copy of the matrix in the kernels' layout (the file's bytes stay mapped for Embed),
    // in huge pages (aligned_storage.h). Measured on a 2-core Zen 4, AVX-512 VNNI, one
    // thread: Q4_0 24 -> 54 GB/s from cache and 17 -> 24 GB/s from memory, Q8_0 33 -> 74
    // and 16 -> 23 GB/s; 32-token prefill 2-3x. F16 from memory 16 -> 27 GB/s.
    AlignedStorage tiles;
    auto* dst = static_cast<uint8_t*>(tiles.Reserve(static_cast<size_t>(row_bytes * view.rows())));
    if (dst == nullptr) return fail("out of memory for the tiled copy");
    const auto* src = static_cast<const uint8_t*>(view.data);
    const int64_t rows = view.rows();
    pool_.ParallelFor(CeilDiv(rows, tile_rows), 64, [&](int64_t begin, int64_t end, int) {
      TileRows(view.type, src, rows, cols, begin * tile_rows, std::min(end * tile_rows, rows), dst);
    });
    weight->set_tiles(std::move(tiles));
  }
  return weight;
}

void CpuBackend::Write(DeviceBuffer& dst, int64_t offset, std::span<const float> src) {
  Require(offset >= 0 && offset + static_cast<int64_t>(src.size()) <= dst.size(), "Write",
          "range outside the buffer");
  std::memcpy(Data(dst) + offset, src.data(), src.size_bytes());
}

void CpuBackend::Read(const DeviceBuffer& src, int64_t offset, std::span<float> dst) {
  Require(offset >= 0 && offset + static_cast<int64_t>(dst.size()) <= src.size(), "Read",
          "range outside the buffer");
  std::memcpy(dst.data(), Data(src) + offset, dst.size_bytes());
}

template <typename T>
T* CpuBackend::PerThreadScratch(AlignedStorage& storage, int64_t count, int64_t* stride) {
  *stride = static_cast<int64_t>(PadToCacheLine(static_cast<size_t>(count), sizeof(T)));
  T* p = storage.Reserve<T>(static_cast<size_t>(*stride * threads()));
  Require(p != nullptr, "scratch", "out of memory");
  return p;
}

// --- Matrix product --------------------------------------------------------------------------

void CpuBackend::PrepareActivations(const Weight& w, const float* in, int n, MatMulArgs& a) {
  const int64_t cols = w.cols();
  // Converting a token's row is cheap next to the product, but a long prefill still has
  // enough of them to share out.
  const int64_t grain = n * cols < kMinParallelWork ? n : 1;
  if (w.type() == TensorType::kF32) {
    a.xf = in;
    a.x_stride = cols;
    return;
  }
  if (w.type() == TensorType::kF16 || w.type() == TensorType::kBF16) {
    const int64_t stride = static_cast<int64_t>(PadToCacheLine(cols, sizeof(float)));
    float* x = acts_.Reserve<float>(n * stride);
    Require(x != nullptr, "MatMul", "out of memory for activations");
    const auto round = w.type() == TensorType::kF16 ? kernels_.round_f16 : kernels_.round_bf16;
    pool_.ParallelFor(n, grain, [&](int64_t begin, int64_t end, int) {
      for (int64_t t = begin; t < end; ++t) round(in + t * cols, x + t * stride, cols);
    });
    a.xf = x;
    a.x_stride = stride;
    return;
  }
  const int64_t block = w.type() == TensorType::kQ8Group ? w.group_size() : kQ8_0BlockSize;
  const int64_t stride = static_cast<int64_t>(PadToCacheLine(cols, 1));
  const int64_t scale_stride = static_cast<int64_t>(PadToCacheLine(cols / block, sizeof(float)));
  int8_t* q = acts_.Reserve<int8_t>(n * stride);
  float* s = act_scales_.Reserve<float>(n * scale_stride);
  int32_t* sums = act_sums_.Reserve<int32_t>(n * scale_stride);
  Require(q != nullptr && s != nullptr && sums != nullptr, "MatMul",
          "out of memory for activations");
  pool_.ParallelFor(n, grain, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      const float* x = in + t * cols;
      switch (w.type()) {
        case TensorType::kQ8_0:
          kernels_.quantize_q8_0(x, cols, q + t * stride, s + t * scale_stride,
                                 sums + t * scale_stride);
          break;
        case TensorType::kQ4_0:
          kernels_.quantize_q4_0(x, cols, q + t * stride, s + t * scale_stride,
                                 sums + t * scale_stride);
          break;
        default:
          QuantizeQ8Group(x, cols, w.group_size(), q + t * stride, s + t * scale_stride);
          break;
      }
    }
  });
  a.xq = q;
  a.xs = s;
  a.xsum = sums;
  a.x_stride = stride;
  a.xs_stride = scale_stride;
}

void CpuBackend::MatMul(DeviceBuffer& out, const DeviceWeight& weight, const DeviceBuffer& in,
                        int n) {
  const auto& w = static_cast<const Weight&>(weight);
  const int64_t rows = w.rows();
  const int64_t cols = w.cols();
  Require(n >= 1, "MatMul", "no tokens");
  Require(in.size() >= n * cols && out.size() >= n * rows, "MatMul", "buffer too small");
  Require(&out != &in, "MatMul", "output aliases input");
  MatMulArgs a;
  a.w = w.matmul_data();
  a.w_row_bytes = w.row_bytes();
  a.rows = rows;
  a.cols = cols;
  a.tiled = w.tiled();
  a.w_scales = w.scales();
  a.group_size = w.group_size();
  a.n = n;
  a.out = Data(out);
  a.out_stride = rows;
  PrepareActivations(w, Data(in), n, a);
  MatMulFn fn = nullptr;
  switch (w.type()) {
    case TensorType::kF32:
      fn = kernels_.matmul_f32;
      break;
    case TensorType::kF16:
      fn = kernels_.matmul_f16;
      break;
    case TensorType::kBF16:
      fn = kernels_.matmul_bf16;
      break;
    case TensorType::kQ8_0:
      fn = kernels_.matmul_q8_0;
      break;
    case TensorType::kQ4_0:
      fn = kernels_.matmul_q4_0;
      break;
    case TensorType::kQ8Group:
      fn = kernels_.matmul_q8_group;
      break;
  }
  int64_t grain = rows;
  if (rows * cols * n >= kMinParallelWork) {
    grain = RoundUp(CeilDiv(rows, threads() * kChunksPerThread), kRowAlignment);
  }
  pool_.ParallelFor(rows, grain, [&](int64_t begin, int64_t end, int) { fn(a, begin, end); });
}

// --- Other operations ------------------------------------------------------------------------

void CpuBackend::Embed(DeviceBuffer& out, const DeviceWeight& table,
                       std::span<const int32_t> tokens) {
  const auto& w = static_cast<const Weight&>(table);
  const int64_t cols = w.cols();
  Require(out.size() >= static_cast<int64_t>(tokens.size()) * cols, "Embed", "buffer too small");
  float* dst = Data(out);
  for (size_t t = 0; t < tokens.size(); ++t) {
    Require(tokens[t] >= 0 && tokens[t] < w.rows(), "Embed", "token id outside the table");
    DequantizeRow(w.type(), w.row(tokens[t]), std::span<float>(dst + t * cols, cols),
                  w.row_scales(tokens[t]), w.group_size());
  }
}

void CpuBackend::RmsNorm(DeviceBuffer& out, const DeviceBuffer& in, const DeviceWeight& gain, int n,
                         float eps) {
  const auto& g = static_cast<const Weight&>(gain);
  const int64_t size = g.cols();
  Require(in.size() >= n * size && out.size() >= n * size, "RmsNorm", "buffer too small");
  const float* gains = reinterpret_cast<const float*>(g.data());
  if (g.type() != TensorType::kF32) {
    float* converted = gain_.Reserve<float>(size);
    Require(converted != nullptr, "RmsNorm", "out of memory");
    DequantizeRow(g.type(), g.data(), std::span<float>(converted, size), g.row_scales(0),
                  g.group_size());
    gains = converted;
  }
  const float* x = Data(in);
  float* y = Data(out);
  pool_.ParallelFor(n, n * size < kMinParallelWork ? n : 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) RmsNormRow(x + t * size, gains, y + t * size, size, eps);
  });
}

void CpuBackend::Rope(DeviceBuffer& x, int n, int n_heads, int head_size, int pos0,
                      float freq_base) {
  const int64_t width = static_cast<int64_t>(n_heads) * head_size;
  Require(head_size > 0 && head_size % 2 == 0, "Rope", "head size must be even");
  Require(x.size() >= n * width, "Rope", "buffer too small");
  int64_t stride = 0;
  float* scratch = PerThreadScratch<float>(rope_, head_size, &stride);
  float* data = Data(x);
  pool_.ParallelFor(n, n * width < kMinParallelWork ? n : 1,
                    [&](int64_t begin, int64_t end, int worker) {
                      for (int64_t t = begin; t < end; ++t) {
                        RopeRow(data + t * width, n_heads, head_size, pos0 + static_cast<int>(t),
                                freq_base, scratch + worker * stride);
                      }
                    });
}

void CpuBackend::Attention(DeviceBuffer& out, const DeviceBuffer& q, const DeviceBuffer& k,
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
  float* kc = Data(k_cache);
  float* vc = Data(v_cache);
  std::memcpy(kc + s.pos0 * kv_dim, Data(k), n * kv_dim * sizeof(float));
  std::memcpy(vc + s.pos0 * kv_dim, Data(v), n * kv_dim * sizeof(float));

  int64_t stride = 0;
  float* scores = PerThreadScratch<float>(scores_, s.context_length, &stride);
  const float* qs = Data(q);
  float* os = Data(out);
  const int group = s.n_heads / s.n_kv_heads;
  const int64_t tasks = static_cast<int64_t>(n) * s.n_heads;
  const int64_t work = tasks * (s.pos0 + n) * s.head_size;
  pool_.ParallelFor(
      tasks, work < kMinParallelWork ? tasks : 1, [&](int64_t begin, int64_t end, int worker) {
        for (int64_t task = begin; task < end; ++task) {
          const int64_t t = task / s.n_heads;
          const int h = static_cast<int>(task % s.n_heads);
          const int64_t kv_offset = static_cast<int64_t>(h / group) * s.head_size;
          AttendHead(kernels_, qs + t * q_dim + h * s.head_size, kc + kv_offset, vc + kv_offset,
                     kv_dim, s.pos0 + static_cast<int>(t), s.head_size, scores + worker * stride,
                     os + t * q_dim + h * s.head_size);
        }
      });
}

void CpuBackend::SwiGlu(DeviceBuffer& gate, const DeviceBuffer& up, int64_t count) {
  Require(count >= 0 && gate.size() >= count && up.size() >= count, "SwiGlu", "buffer too small");
  float* g = Data(gate);
  const float* u = Data(up);
  const int64_t grain = count < kMinParallelWork
                            ? count
                            : RoundUp(CeilDiv(count, threads() * kChunksPerThread), kRowAlignment);
  pool_.ParallelFor(count, grain,
                    [&](int64_t begin, int64_t end, int) { SwiGluRange(g, u, begin, end); });
}

void CpuBackend::AddScaled(DeviceBuffer& acc, int64_t acc_offset, const DeviceBuffer& x,
                           int64_t count, float scale) {
  Require(count >= 0 && acc_offset >= 0 && acc.size() - acc_offset >= count && x.size() >= count,
          "AddScaled", "buffer too small");
  float* a = Data(acc) + acc_offset;
  const float* b = Data(x);
  for (int64_t i = 0; i < count; ++i) a[i] += scale * b[i];
}

void CpuBackend::Zero(DeviceBuffer& buffer, int64_t count) {
  Require(count >= 0 && buffer.size() >= count, "Zero", "buffer too small");
  std::fill(Data(buffer), Data(buffer) + count, 0.0f);
}

void CpuBackend::Add(DeviceBuffer& acc, const DeviceBuffer& x, int64_t count) {
  Require(count >= 0 && acc.size() >= count && x.size() >= count, "Add", "buffer too small");
  float* a = Data(acc);
  const float* b = Data(x);
  for (int64_t i = 0; i < count; ++i) a[i] += b[i];
}

void CpuBackend::Copy(DeviceBuffer& dst, int64_t dst_offset, const DeviceBuffer& src,
                      int64_t src_offset, int64_t count) {
  Require(count >= 0 && dst_offset >= 0 && src_offset >= 0 && dst_offset + count <= dst.size() &&
              src_offset + count <= src.size(),
          "Copy", "range outside the buffer");
  std::memmove(Data(dst) + dst_offset, Data(src) + src_offset, count * sizeof(float));
}

}  // namespace shardrun
