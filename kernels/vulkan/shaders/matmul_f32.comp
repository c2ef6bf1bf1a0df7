#version 450
// out[t][r] = sum_c w[r][c] * x[t][c]: one workgroup per (row, token) of a weight piece.
#define WG 64u
#include "common.glsl"
#include "reduce.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer W { float w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform Params {
  uint rows;        // rows of this piece
  uint cols;
  uint n;           // tokens
  uint w_base;      // element offsets into the bindings
  uint x_base;
  uint out_base;    // out index of (token 0, first row of the piece)
  uint out_stride;  // out floats per token: the rows of the whole matrix
} p;

void main() {
  const uint g = LinearGroup();
  if (g >= p.rows * p.n) return;  // uniform per workgroup
  const uint r = g % p.rows;
  const uint t = g / p.rows;
  const uint w0 = p.w_base + r * p.cols;
  const uint x0 = p.x_base + t * p.cols;
  float sum = 0.0;
  for (uint c = gl_LocalInvocationID.x; c < p.cols; c += WG) sum += w[w0 + c] * x[x0 + c];
  sum = WorkgroupSum(sum);
  if (gl_LocalInvocationID.x == 0u) out_[p.out_base + t * p.out_stride + r] = sum;
}
