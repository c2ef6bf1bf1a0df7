// Shared helpers of the shardrun compute shaders.
//
// Dispatches are two-dimensional when a one-dimensional grid would exceed the device's
// maxComputeWorkGroupCount[0]; LinearGroup() recovers the flat group index and the host
// guarantees that every index below the real group count is covered.

uint LinearGroup() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

// IEEE float32 -> float16 bits, rounding to nearest even (F. Giesen's method): the GLSL
// packHalf2x16 leaves the rounding mode to the implementation, and the CPU reference rounds
// to nearest even. The float addition of the subnormal branch is correctly rounded in
// Vulkan, which makes that branch round to nearest even too.
uint F32ToF16Bits(float f) {
  uint x = floatBitsToUint(f);
  const uint sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  uint h;
  if (x >= 0x47800000u) {  // too large for f16, infinity or NaN
    h = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (x < 0x38800000u) {  // an f16 subnormal or zero
    const float magic = uintBitsToFloat(0x3f000000u);
    h = floatBitsToUint(uintBitsToFloat(x) + magic) - 0x3f000000u;
  } else {
    const uint odd = (x >> 13) & 1u;
    x += 0xc8000fffu + odd;
    h = x >> 13;
  }
  return h | sign;
}

// float16 bits -> float32, exact for every value (subnormals included, whatever the
// device's float16 denormal mode).
float F16BitsToF32(uint h) {
  const uint sign = (h & 0x8000u) << 16;
  const uint e = (h >> 10) & 0x1fu;
  const uint m = h & 0x3ffu;
  if (e == 0u) {
    const float v = float(m) * 5.9604644775390625e-8;  // m * 2^-24, exact
    return sign != 0u ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(sign | 0x7f800000u | (m << 13));
  return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

float RoundToF16(float f) { return F16BitsToF32(F32ToF16Bits(f)); }

// Byte k (0..3) of a word as a signed int8.
int SignedByte(uint word, uint k) { return bitfieldExtract(int(word), int(8u * k), 8); }

// Dot product of the four signed bytes of a and b.
int Dot4(uint a, uint b) {
  return SignedByte(a, 0u) * SignedByte(b, 0u) + SignedByte(a, 1u) * SignedByte(b, 1u) +
         SignedByte(a, 2u) * SignedByte(b, 2u) + SignedByte(a, 3u) * SignedByte(b, 3u);
}
