// The compute interface the forward pass is written against.
//
// A backend owns memory for activations and weights and runs the llama operations on it.
// The forward pass calls these operations in order; a backend may run each one at once (CPU)
// or record it and run the whole sequence when the host next needs a result (Vulkan: one
// command buffer per token per shard). Host memory is touched only through Write/Read, so a
// backend with its own device memory fits without changes to the forward pass.
//
// Activations are float32 row-major [n_tokens][width]. Operations take the number of tokens
// `n`, so the same call serves one decode step and a batched prefill.
#ifndef SHARDRUN_KERNELS_BACKEND_H_
#define SHARDRUN_KERNELS_BACKEND_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor_type.h"

namespace shardrun {

struct TensorView;

// A float32 array in the backend's memory.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t size) : size_(size) {}
  virtual ~DeviceBuffer() = default;
  int64_t size() const { return size_; }  // in floats

 private:
  int64_t size_;
};

// A weight tensor prepared for the backend (possibly repacked or copied to a device).
// Matrices are [rows][cols]: a matrix product maps `cols` inputs to `rows` outputs.
class DeviceWeight {
 public:
  DeviceWeight(TensorType type, int64_t rows, int64_t cols)
      : type_(type), rows_(rows), cols_(cols) {}
  virtual ~DeviceWeight() = default;
  TensorType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }

 private:
  TensorType type_;
  int64_t rows_;
  int64_t cols_;
};

// Shape of one attention call: `n` new tokens at positions pos0 .. pos0+n-1, each attending
// causally to every earlier position in the cache.
struct AttentionShape {
  int n_tokens = 1;
  int pos0 = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads; query head h uses kv head h / (n_heads / n_kv_heads)
  int head_size = 0;
  int context_length = 0;  // rows of the cache buffers
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // --- Memory -------------------------------------------------------------------------
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(int64_t floats) = 0;
  // Prepares a weight for this backend. The view's data stays valid for the weight's
  // lifetime (the model file stays mapped), so a host backend may use it in place.
  // 1-D tensors (norm gains) load as one row.
  virtual absl::StatusOr<std::unique_ptr<DeviceWeight>> LoadWeight(const TensorView& view) = 0;
  // Host <-> backend copies of `src.size()` / `dst.size()` floats starting at `offset`.
  virtual void Write(DeviceBuffer& dst, int64_t offset, std::span<const float> src) = 0;
  virtual void Read(const DeviceBuffer& src, int64_t offset, std::span<float> dst) = 0;
  // Waits until every operation issued so far has finished; reports a device failure.
  virtual absl::Status Synchronize() = 0;

  // --- Operations -----------------------------------------------------------------------
  // out[t] = table row tokens[t], dequantized to float32.
  virtual void Embed(DeviceBuffer& out, const DeviceWeight& table,
                     std::span<const int32_t> tokens) = 0;
  // out[t] = in[t] / rms(in[t]) * gain, per token over `gain.cols()` values (in == out ok).
  virtual void RmsNorm(DeviceBuffer& out, const DeviceBuffer& in, const DeviceWeight& gain, int n,
                       float eps) = 0;
  // out[t][r] = sum_c w[r][c] * in[t][c], for t < n. Quantized weights see activations
  // rounded or quantized as llama.cpp (and runq.c for kQ8Group) do before the dot product.
  virtual void MatMul(DeviceBuffer& out, const DeviceWeight& w, const DeviceBuffer& in, int n) = 0;
  // Rotates interleaved pairs (x[2i], x[2i+1]) of each head of each token by
  // (pos0 + t) * freq_base^(-2i / head_size), in place; x is [n][n_heads * head_size].
  virtual void Rope(DeviceBuffer& x, int n, int n_heads, int head_size, int pos0,
                    float freq_base) = 0;
  // Stores k and v ([n][n_kv_heads * head_size]) at positions pos0.. of the caches
  // ([context_length][n_kv_heads * head_size]) and writes softmax(q k^T / sqrt(head_size)) v
  // for every query head of every new token to out ([n][n_heads * head_size]).
  virtual void Attention(DeviceBuffer& out, const DeviceBuffer& q, const DeviceBuffer& k,
                         const DeviceBuffer& v, DeviceBuffer& k_cache, DeviceBuffer& v_cache,
                         const AttentionShape& shape) = 0;
  // gate[i] = silu(gate[i]) * up[i] for the first `count` values.
  virtual void SwiGlu(DeviceBuffer& gate, const DeviceBuffer& up, int64_t count) = 0;
  // acc[i] += x[i] for the first `count` values.
  virtual void Add(DeviceBuffer& acc, const DeviceBuffer& x, int64_t count) = 0;
  // acc[acc_offset + i] += scale * x[i] for i < count (weighted sums of MoE experts).
  virtual void AddScaled(DeviceBuffer& acc, int64_t acc_offset, const DeviceBuffer& x,
                         int64_t count, float scale) = 0;
  // Fills the first `count` values with zero.
  virtual void Zero(DeviceBuffer& buffer, int64_t count) = 0;
  // dst[dst_offset + i] = src[src_offset + i] for i < count.
  virtual void Copy(DeviceBuffer& dst, int64_t dst_offset, const DeviceBuffer& src,
                    int64_t src_offset, int64_t count) = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_BACKEND_H_
