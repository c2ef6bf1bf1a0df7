// The CPU backend's float32 operations other than the matrix product, per row or per head,
// with llama2.c run.c's formulas (the backend spreads them over its threads).
#ifndef SHARDRUN_KERNELS_CPU_CPU_OPS_H_
#define SHARDRUN_KERNELS_CPU_CPU_OPS_H_

#include <cstdint>

#include "kernels/cpu/cpu_kernels.h"

namespace shardrun {

// out = gain * (x * (1 / sqrtf(sum(x^2) / size + eps))), the sum of squares accumulated in
// double (as ggml does); out may equal x.
void RmsNormRow(const float* x, const float* gain, float* out, int64_t size, float eps);

// Rotates the interleaved pairs of each of `n_heads` heads of one token at position `pos`:
// pair i of a head turns by pos * freq_base^(-2i / head_size). `scratch` holds head_size
// floats.
void RopeRow(float* x, int n_heads, int head_size, int pos, float freq_base, float* scratch);

// One query head of one token attending to cache positions 0..last: out = softmax(q k^T /
// sqrt(head_size)) v. `k` and `v` point at the head's slice of cache position 0, positions
// `kv_stride` floats apart; `scores` holds last + 1 floats.
void AttendHead(const CpuKernels& kernels, const float* q, const float* k, const float* v,
                int64_t kv_stride, int last, int head_size, float* scores, float* out);

// gate[i] = gate[i] / (1 + expf(-gate[i])) * up[i] for i in [begin, end).
void SwiGluRange(float* gate, const float* up, int64_t begin, int64_t end);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_CPU_OPS_H_
