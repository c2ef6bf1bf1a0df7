// AVX-512 kernels with VNNI int8 dot products (vpdpbusd). Compiled with the AVX-512 flags
// plus -mavx512vnni.
#include "kernels/cpu/kernels_avx512_impl.h"

namespace shardrun {

const CpuKernels& Avx512VnniKernels() {
  static constexpr CpuKernels kKernels = MakeAvx512Kernels<true>();
  return kKernels;
}

}  // namespace shardrun
