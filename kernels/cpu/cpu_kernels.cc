#include "kernels/cpu/cpu_kernels.h"

namespace shardrun {

const CpuKernels& KernelsFor(CpuLevel level) {
#if defined(__x86_64__)
  switch (level) {
    case CpuLevel::kAvx512:
      return CpuHasAvx512Vnni() ? Avx512VnniKernels() : Avx512Kernels();
    case CpuLevel::kAvx2:
      return Avx2Kernels();
    case CpuLevel::kGeneric:
      break;
  }
#else
  (void)level;
#endif
  return GenericKernels();
}

}  // namespace shardrun
