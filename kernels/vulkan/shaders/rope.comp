#version 450
// Rotates the interleaved pairs of each head in place. The cosines and sines come from the
// host (computed there with the CPU backend's formula): GLSL's sin/cos are only specified on
// [-pi, pi], and large positions need accurate angles.
#include "common.glsl"
layout(local_size_x = 64) in;

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Table { vec2 table[]; };  // [t][pair]: (cos, sin)
layout(push_constant) uniform Params {
  uint n;
  uint n_heads;
  uint head_size;
  uint x_base;
  uint tab_base;  // in (cos, sin) pairs
} p;

void main() {
  const uint half_size = p.head_size / 2u;
  const uint i = LinearGroup() * 64u + gl_LocalInvocationID.x;
  if (i >= p.n * p.n_heads * half_size) return;
  const uint pair = i % half_size;
  const uint t = i / (half_size * p.n_heads);
  const uint at = p.x_base + 2u * i;  // pairs of a token's heads are contiguous
  const vec2 cs = table[p.tab_base + t * half_size + pair];
  const float v0 = x[at];
  const float v1 = x[at + 1u];
  precise float r0 = v0 * cs.x - v1 * cs.y;
  precise float r1 = v0 * cs.y + v1 * cs.x;
  x[at] = r0;
  x[at + 1u] = r1;
}
