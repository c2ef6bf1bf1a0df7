// Instruction-set levels of the CPU backend's kernels and their run-time detection.
//
// Each level's kernels live in their own source file compiled with that level's -m flags,
// so the rest of the binary runs on any x86-64; the backend picks the best level the CPU
// supports when it is created (or the one named by SHARDRUN_CPU_LEVEL).
#ifndef SHARDRUN_KERNELS_CPU_CPU_LEVEL_H_
#define SHARDRUN_KERNELS_CPU_CPU_LEVEL_H_

#include <optional>
#include <string_view>

#include "absl/status/statusor.h"

namespace shardrun {

enum class CpuLevel {
  kGeneric,  // portable C++, any CPU
  kAvx2,     // AVX2 + FMA + F16C
  kAvx512,   // AVX-512 F/BW/VL (+ VNNI for the int8 dot products when the CPU has it)
};

inline constexpr const char* kCpuLevelEnvVar = "SHARDRUN_CPU_LEVEL";

// "generic", "avx2", "avx512".
std::string_view CpuLevelName(CpuLevel level);
std::optional<CpuLevel> CpuLevelFromName(std::string_view name);

// Whether this CPU (and this build: only the generic level exists off x86-64) can run `level`.
bool CpuSupportsLevel(CpuLevel level);
// Whether the AVX-512 level can use VNNI (vpdpbusd) for int8 dot products.
bool CpuHasAvx512Vnni();
// The best level this CPU supports.
CpuLevel BestCpuLevel();
// The level to use: SHARDRUN_CPU_LEVEL when set (an error if it names no level or one this CPU
// cannot run), else BestCpuLevel().
absl::StatusOr<CpuLevel> SelectCpuLevel();

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_CPU_CPU_LEVEL_H_
