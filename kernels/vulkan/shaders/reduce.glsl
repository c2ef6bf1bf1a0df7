// Sum of one float per invocation over a workgroup of WG invocations (a power of two),
// returned to every invocation. Must be reached by the whole workgroup.
shared float reduce_partial[WG];

float WorkgroupSum(float v) {
  const uint tid = gl_LocalInvocationID.x;
  reduce_partial[tid] = v;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1u) {
    if (tid < s) reduce_partial[tid] += reduce_partial[tid + s];
    barrier();
  }
  const float total = reduce_partial[0];
  barrier();  // the array is free for the next call
  return total;
}
