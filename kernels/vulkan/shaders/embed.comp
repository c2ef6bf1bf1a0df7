#version 450
// out[t] = row tokens[t] of the table, dequantized. The table may be split into pieces (rows
// [row_begin, row_begin + rows) here); tokens outside this piece are left to another dispatch.
// Layouts (weight_layout.h): F32 floats; F16 two halves per word, rows `w_stride` words
// apart; Q8_0 / Q4_0 packed values of all rows, then one float scale per block.
#include "common.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer Tokens { int tokens[]; };
layout(std430, binding = 2) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform Params {
  uint type;  // 0 F32, 1 F16, 2 Q8_0, 3 Q4_0
  uint cols;
  uint n;
  uint row_begin;
  uint rows;
  uint w_stride;  // F32 / F16: words per row
  uint d_offset;  // Q8_0 / Q4_0: word index of the first scale
  uint out_base;
  uint tok_base;
} p;

void main() {
  const uint i = LinearGroup() * 64u + gl_LocalInvocationID.x;
  if (i >= p.n * p.cols) return;
  const uint t = i / p.cols;
  const uint c = i % p.cols;
  const uint row = uint(tokens[p.tok_base + t]) - p.row_begin;
  if (row >= p.rows) return;  // another piece's row
  float v;
  if (p.type == 0u) {
    v = uintBitsToFloat(w[row * p.w_stride + c]);
  } else if (p.type == 1u) {
    const uint word = w[row * p.w_stride + c / 2u];
    v = F16BitsToF32((c & 1u) == 0u ? word & 0xffffu : word >> 16);
  } else if (p.type == 2u) {
    const uint blocks = p.cols / 32u;
    const float d = uintBitsToFloat(w[p.d_offset + row * blocks + c / 32u]);
    v = d * float(SignedByte(w[(row * p.cols + c) / 4u], c % 4u));
  } else {
    const uint blocks = p.cols / 32u;
    const float d = uintBitsToFloat(w[p.d_offset + row * blocks + c / 32u]);
    const uint j = c % 32u;
    const uint byte_index = (row * blocks + c / 32u) * 16u + (j % 16u);
    const uint shift = 8u * (byte_index % 4u) + (j < 16u ? 0u : 4u);
    v = d * float(int((w[byte_index / 4u] >> shift) & 0xfu) - 8);
  }
  out_[p.out_base + i] = v;
}
