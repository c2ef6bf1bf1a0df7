#version 450
// out[t] = gain * (x[t] * (1 / sqrt(mean(x[t]^2) + eps))): one workgroup per token. x and out
// may be the same buffer: every invocation reads its own values before writing them.
#define WG 128u
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = 128) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Gain { float gain[]; };
layout(std430, binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform Params {
  uint size;
  uint n;
  uint x_base;
  uint gain_base;
  uint out_base;
  float eps;
} p;

void main() {
  const uint t = LinearGroup();
  if (t >= p.n) return;
  const uint x0 = p.x_base + t * p.size;
  float sum = 0.0;
  for (uint j = gl_LocalInvocationID.x; j < p.size; j += WG) sum += x[x0 + j] * x[x0 + j];
  sum = WorkgroupSum(sum);
  const float ss = 1.0 / sqrt(sum / float(p.size) + p.eps);
  for (uint j = gl_LocalInvocationID.x; j < p.size; j += WG) {
    precise float v = gain[p.gain_base + j] * (ss * x[x0 + j]);
    out_[p.out_base + t * p.size + j] = v;
  }
}
