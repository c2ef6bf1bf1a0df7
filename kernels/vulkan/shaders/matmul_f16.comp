#version 450
// F16 weights: the activations are rounded to F16 first (as llama.cpp does), then the
// products are summed in float32. One workgroup per (row, token) of a weight piece.
#define WG 64u
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer W { uint w[]; };  // two halves per word
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform Params {
  uint rows;
  uint cols;
  uint n;
  uint w_base;    // in words
  uint w_stride;  // words per row: ceil(cols / 2)
  uint x_base;
  uint out_base;
  uint out_stride;
} p;

void main() {
  const uint g = LinearGroup();
  if (g >= p.rows * p.n) return;
  const uint r = g % p.rows;
  const uint t = g / p.rows;
  const uint w0 = p.w_base + r * p.w_stride;
  const uint x0 = p.x_base + t * p.cols;
  float sum = 0.0;
  for (uint j = gl_LocalInvocationID.x; j < p.w_stride; j += WG) {
    const vec2 wv = vec2(F16BitsToF32(w[w0 + j] & 0xffffu), F16BitsToF32(w[w0 + j] >> 16));
    const uint c = 2u * j;
    sum += wv.x * RoundToF16(x[x0 + c]);
    if (c + 1u < p.cols) sum += wv.y * RoundToF16(x[x0 + c + 1u]);
  }
  sum = WorkgroupSum(sum);
  if (gl_LocalInvocationID.x == 0u) out_[p.out_base + t * p.out_stride + r] = sum;
}
