#version 450
// gate[i] = gate[i] * (1 / (1 + exp(-gate[i]))) * up[i], rounded step by step as run.c does.
#include "common.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer Gate { float gate[]; };
layout(std430, binding = 1) readonly buffer Up { float up[]; };
layout(push_constant) uniform Params {
  uint count;
  uint gate_base;
  uint up_base;
} p;

void main() {
  const uint i = LinearGroup() * 64u + gl_LocalInvocationID.x;
  if (i >= p.count) return;
  const float v = gate[p.gate_base + i];
  precise float silu = v * (1.0 / (1.0 + exp(-v)));
  precise float result = silu * up[p.up_base + i];
  gate[p.gate_base + i] = result;
}
