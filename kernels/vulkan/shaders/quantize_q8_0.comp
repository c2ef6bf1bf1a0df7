#version 450
// Quantizes activations to Q8_0 blocks of 32 as llama.cpp's quantize_row_q8_0 does (and the
// CPU backend): amax = max |x|, d = f16(amax / 127), q = round_half_even(x * 127 / amax)
// saturated to int8. One invocation per block; q packed four to a word.
#include "common.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Q { uint q[]; };     // 8 words per block
layout(std430, binding = 2) writeonly buffer D { float d[]; };    // one scale per block
layout(push_constant) uniform Params {
  uint blocks;  // n * cols / 32
  uint x_base;
} p;

void main() {
  const uint b = LinearGroup() * 64u + gl_LocalInvocationID.x;
  if (b >= p.blocks) return;
  const uint x0 = p.x_base + 32u * b;
  float amax = 0.0;
  for (uint j = 0u; j < 32u; ++j) amax = max(amax, abs(x[x0 + j]));
  d[b] = RoundToF16(amax / 127.0);
  const float id = amax != 0.0 ? 127.0 / amax : 0.0;
  for (uint w = 0u; w < 8u; ++w) {
    uint word = 0u;
    for (uint k = 0u; k < 4u; ++k) {
      precise float scaled = x[x0 + 4u * w + k] * id;
      const int v = int(clamp(roundEven(scaled), -128.0, 127.0));
      word |= (uint(v) & 0xffu) << (8u * k);
    }
    q[8u * b + w] = word;
  }
}
