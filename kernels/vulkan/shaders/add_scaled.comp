#version 450
// acc[i] += scale * x[i] (Add is scale 1, which is exact).
#include "common.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer Acc { float acc[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(push_constant) uniform Params {
  uint count;
  uint acc_base;
  uint x_base;
  float scale;
} p;

void main() {
  const uint i = LinearGroup() * 64u + gl_LocalInvocationID.x;
  if (i >= p.count) return;
  precise float v = acc[p.acc_base + i] + p.scale * x[p.x_base + i];
  acc[p.acc_base + i] = v;
}
