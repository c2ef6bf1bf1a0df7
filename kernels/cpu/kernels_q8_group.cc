// llama2.c runq.c's int8 group quantization and matmul, shared by every CPU level.
//
// Results must equal runq.c's bit for bit, so the float operations below are written in
// runq.c's order and this file is compiled without FMA contraction.
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"

namespace shardrun {

void QuantizeQ8Group(const float* x, int64_t cols, int group_size, int8_t* q, float* scales) {
  for (int64_t g = 0; g < cols / group_size; ++g) {
    const float* v = x + g * group_size;
    float wmax = 0.0f;
    for (int i = 0; i < group_size; ++i) {
      const float val = std::fabs(v[i]);
      if (val > wmax) wmax = val;
    }
    const float scale = wmax / 127.0f;
    scales[g] = scale;
    for (int i = 0; i < group_size; ++i) {
      // runq.c divides by 0 here (NaN, then an undefined cast); zero is the meaningful value.
      q[g * group_size + i] = scale == 0.0f ? 0 : static_cast<int8_t>(std::round(v[i] / scale));
    }
  }
}

void MatMulQ8Group(const MatMulArgs& a, int64_t row_begin, int64_t row_end) {
  const int gs = a.group_size;
  const int64_t groups = a.cols / gs;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const auto* w = reinterpret_cast<const int8_t*>(a.w + r * a.w_row_bytes);
    const float* ws = a.w_scales + r * groups;
    for (int t = 0; t < a.n; ++t) {
      const int8_t* x = a.xq + t * a.x_stride;
      const float* xs = a.xs + t * a.xs_stride;
      float val = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t ival = 0;
        for (int k = 0; k < gs; ++k) {
          ival += static_cast<int32_t>(x[g * gs + k]) * static_cast<int32_t>(w[g * gs + k]);
        }
        val += static_cast<float>(ival) * ws[g] * xs[g];
      }
      a.out[t * a.out_stride + r] = val;
    }
  }
}

}  // namespace shardrun
