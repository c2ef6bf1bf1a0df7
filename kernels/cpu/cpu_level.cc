#include "kernels/cpu/cpu_level.h"

#include <cstdlib>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace shardrun {
namespace {

#if defined(__x86_64__)
// F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c".
bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & bit_F16C) != 0;
}
#endif

}  // namespace

std::string_view CpuLevelName(CpuLevel level) {
  switch (level) {
    case CpuLevel::kGeneric:
      return "generic";
    case CpuLevel::kAvx2:
      return "avx2";
    case CpuLevel::kAvx512:
      return "avx512";
  }
  return "unknown";
}

std::optional<CpuLevel> CpuLevelFromName(std::string_view name) {
  for (CpuLevel level : {CpuLevel::kGeneric, CpuLevel::kAvx2, CpuLevel::kAvx512}) {
    if (CpuLevelName(level) == name) return level;
  }
  return std::nullopt;
}

bool CpuSupportsLevel(CpuLevel level) {
  switch (level) {
    case CpuLevel::kGeneric:
      return true;
#if defined(__x86_64__)
    case CpuLevel::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CpuHasF16c();
    case CpuLevel::kAvx512:
      return CpuSupportsLevel(CpuLevel::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    case CpuLevel::kAvx2:
    case CpuLevel::kAvx512:
      return false;
#endif
  }
  return false;
}

bool CpuHasAvx512Vnni() {
#if defined(__x86_64__)
  return CpuSupportsLevel(CpuLevel::kAvx512) && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

CpuLevel BestCpuLevel() {
  if (CpuSupportsLevel(CpuLevel::kAvx512)) return CpuLevel::kAvx512;
  if (CpuSupportsLevel(CpuLevel::kAvx2)) return CpuLevel::kAvx2;
  return CpuLevel::kGeneric;
}

absl::StatusOr<CpuLevel> SelectCpuLevel() {
  const char* forced = std::getenv(kCpuLevelEnvVar);
  if (forced == nullptr || *forced == '\0') return BestCpuLevel();
  const std::optional<CpuLevel> level = CpuLevelFromName(forced);
  if (!level) {
    return absl::InvalidArgumentError(absl::StrCat(
        kCpuLevelEnvVar, "=", forced, " names no CPU level (use generic, avx2 or avx512)"));
  }
  if (!CpuSupportsLevel(*level)) {
    return absl::FailedPreconditionError(
        absl::StrCat(kCpuLevelEnvVar, "=", forced, ": this CPU or build cannot run that level"));
  }
  return *level;
}

}  // namespace shardrun
