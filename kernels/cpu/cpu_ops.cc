#include "kernels/cpu/cpu_ops.h"

#include <cmath>

namespace shardrun {

void RmsNormRow(const float* x, const float* gain, float* out, int64_t size, float eps) {
  // The sum of squares in double, as ggml does: its result then equals llama.cpp's to the
  // bit, so the int8 quantization of the next matrix product's input rounds the same way.
  // (run.c sums in float; its references agree either way.)
  double sum = 0.0;
  for (int64_t j = 0; j < size; ++j) sum += static_cast<double>(x[j] * x[j]);
  const float mean = static_cast<float>(sum / static_cast<double>(size));
  const float ss = 1.0f / sqrtf(mean + eps);
  for (int64_t j = 0; j < size; ++j) out[j] = gain[j] * (ss * x[j]);
}

void RopeRow(float* x, int n_heads, int head_size, int pos, float freq_base, float* scratch) {
  // The angles depend only on the position within the head: compute them once per token.
  float* cos_pair = scratch;
  float* sin_pair = scratch + head_size / 2;
  for (int i = 0; i < head_size; i += 2) {
    const float freq =
        1.0f / powf(freq_base, static_cast<float>(i) / static_cast<float>(head_size));
    const float angle = static_cast<float>(pos) * freq;
    cos_pair[i / 2] = cosf(angle);
    sin_pair[i / 2] = sinf(angle);
  }
  for (int h = 0; h < n_heads; ++h) {
    float* head = x + static_cast<int64_t>(h) * head_size;
    for (int i = 0; i < head_size; i += 2) {
      const float v0 = head[i];
      const float v1 = head[i + 1];
      head[i] = v0 * cos_pair[i / 2] - v1 * sin_pair[i / 2];
      head[i + 1] = v0 * sin_pair[i / 2] + v1 * cos_pair[i / 2];
    }
  }
}

void AttendHead(const CpuKernels& kernels, const float* q, const float* k, const float* v,
                int64_t kv_stride, int last, int head_size, float* scores, float* out) {
  const float root = sqrtf(static_cast<float>(head_size));
  float max = -INFINITY;
  for (int p = 0; p <= last; ++p) {
    scores[p] = kernels.dot(q, k + p * kv_stride, head_size) / root;
    if (scores[p] > max) max = scores[p];
  }
  float sum = 0.0f;
  for (int p = 0; p <= last; ++p) {
    scores[p] = expf(scores[p] - max);
    sum += scores[p];
  }
  for (int p = 0; p <= last; ++p) scores[p] /= sum;
  for (int i = 0; i < head_size; ++i) out[i] = 0.0f;
  for (int p = 0; p <= last; ++p) kernels.axpy(scores[p], v + p * kv_stride, out, head_size);
}

// run.c's form, x * (1 / (1 + e^-x)) * up, rounded step by step as run.c rounds it, so that
// sampled runs reproduce run.c's (a last-bit difference can flip a draw).
void SwiGluRange(float* gate, const float* up, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    float val = gate[i];
    val *= 1.0f / (1.0f + expf(-val));
    gate[i] = val * up[i];
  }
}

}  // namespace shardrun
