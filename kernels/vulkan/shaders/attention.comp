#version 450
// softmax(q k^T / sqrt(head_size)) v for one query head of one token per workgroup, over
// cache positions 0 .. pos0 + t (causal). Positions go in tiles of 64 with an online softmax
// (running maximum and sum), so no score array of context length is needed: each invocation
// scores one position of the tile, then accumulates its own output dimensions over the tile.
#include "common.glsl"
layout(local_size_x = 64) in;
#define MAX_HEAD 256u

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float kc[]; };
layout(std430, binding = 2) readonly buffer V { float vc[]; };
layout(std430, binding = 3) writeonly buffer Out { float out_[]; };
layout(push_constant) uniform Params {
  uint n;
  uint pos0;
  uint n_heads;
  uint head_size;
  uint kv_dim;
  uint group;  // query heads per kv head
  uint q_base;
  uint out_base;
  float root;  // sqrt(head_size)
} p;

shared float qh[MAX_HEAD];
shared float scores[64];

void main() {
  const uint g = LinearGroup();
  if (g >= p.n * p.n_heads) return;
  const uint tid = gl_LocalInvocationID.x;
  const uint t = g / p.n_heads;
  const uint h = g % p.n_heads;
  const uint q0 = p.q_base + t * p.n_heads * p.head_size + h * p.head_size;
  const uint kv0 = (h / p.group) * p.head_size;
  for (uint d = tid; d < p.head_size; d += 64u) qh[d] = q[q0 + d];
  barrier();

  const uint last = p.pos0 + t;
  float m = -3.0e38;
  float l = 0.0;
  float acc[MAX_HEAD / 64u];
  for (uint k = 0u; k < MAX_HEAD / 64u; ++k) acc[k] = 0.0;
  for (uint p0 = 0u; p0 <= last; p0 += 64u) {
    const uint pos = p0 + tid;
    float s = -3.0e38;
    if (pos <= last) {
      float dot = 0.0;
      const uint k0 = pos * p.kv_dim + kv0;
      for (uint d = 0u; d < p.head_size; ++d) dot += qh[d] * kc[k0 + d];
      s = dot / p.root;
    }
    scores[tid] = s;
    barrier();
    const uint count = min(64u, last + 1u - p0);
    float tile_max = m;
    for (uint j = 0u; j < count; ++j) tile_max = max(tile_max, scores[j]);
    const float correction = exp(m - tile_max);
    l *= correction;
    for (uint k = 0u; k < MAX_HEAD / 64u; ++k) acc[k] *= correction;
    for (uint j = 0u; j < count; ++j) {
      const float e = exp(scores[j] - tile_max);
      l += e;
      const uint v0 = (p0 + j) * p.kv_dim + kv0;
      for (uint k = 0u; k < MAX_HEAD / 64u; ++k) {
        const uint d = tid + 64u * k;
        if (d < p.head_size) acc[k] += e * vc[v0 + d];
      }
    }
    m = tile_max;
    barrier();  // scores is rewritten by the next tile
  }
  const uint o0 = p.out_base + t * p.n_heads * p.head_size + h * p.head_size;
  for (uint k = 0u; k < MAX_HEAD / 64u; ++k) {
    const uint d = tid + 64u * k;
    if (d < p.head_size) out_[o0 + d] = acc[k] / l;
  }
}
