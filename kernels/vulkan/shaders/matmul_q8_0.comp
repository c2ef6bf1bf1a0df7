#version 450
// Q8_0 weights times Q8_0-quantized activations (quantize_q8_0.comp): per block of 32 an
// exact int32 dot product scaled by both block scales, as ggml's vec_dot_q8_0_q8_0.
// Weight piece layout (weight_layout.h): int8 values of all rows, then one float scale per
// block. One workgroup per (row, token).
#define WG 64u
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer XQ { uint xq[]; };
layout(std430, binding = 2) readonly buffer XD { float xd[]; };
layout(std430, binding = 3) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform Params {
  uint rows;
  uint cols;
  uint n;
  uint d_offset;  // word index of the first block scale in the piece
  uint out_base;
  uint out_stride;
} p;

void main() {
  const uint g = LinearGroup();
  if (g >= p.rows * p.n) return;
  const uint r = g % p.rows;
  const uint t = g / p.rows;
  const uint blocks = p.cols / 32u;
  float sum = 0.0;
  for (uint b = gl_LocalInvocationID.x; b < blocks; b += WG) {
    const uint wq = (r * blocks + b) * 8u;
    const uint xb = (t * blocks + b) * 8u;
    int isum = 0;
    for (uint i = 0u; i < 8u; ++i) isum += Dot4(w[wq + i], xq[xb + i]);
    sum += float(isum) * (uintBitsToFloat(w[p.d_offset + r * blocks + b]) * xd[t * blocks + b]);
  }
  sum = WorkgroupSum(sum);
  if (gl_LocalInvocationID.x == 0u) out_[p.out_base + t * p.out_stride + r] = sum;
}
