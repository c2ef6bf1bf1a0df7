// AVX-512 F/BW/VL kernels for CPUs without VNNI. Compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx2 -mfma -mf16c.
#include "kernels/cpu/kernels_avx512_impl.h"

namespace shardrun {

const CpuKernels& Avx512Kernels() {
  static constexpr CpuKernels kKernels = MakeAvx512Kernels<false>();
  return kKernels;
}

}  // namespace shardrun
