// Human-friendly byte counts: what `--plan` prints and what `--mem 4G` accepts.
#ifndef SHARDRUN_PARTITIONER_BYTE_SIZE_H_
#define SHARDRUN_PARTITIONER_BYTE_SIZE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace shardrun {

// "512 B", "1.5 KiB", "12.3 MiB", "1.02 GiB": binary units, three significant digits at most,
// trailing zeros dropped. Negative counts (a shortfall) keep their sign.
std::string FormatBytes(int64_t bytes);

// Parses a memory size: a number with an optional unit, case-insensitive, optional space
// between: "4096", "512M", "1G", "2g", "1.5GiB", "64 KiB", "3MB". Every unit is binary
// (K = KiB = KB = 1024), as in `free -h`, Docker and the JVM: memory is sold in powers of two.
// A count without a unit must be whole bytes; a fraction of a larger unit rounds to the
// nearest byte. InvalidArgumentError for anything else (empty, negative, unknown unit, above
// 2^63 - 1 bytes).
absl::StatusOr<int64_t> ParseByteSize(std::string_view text);

}  // namespace shardrun

#endif  // SHARDRUN_PARTITIONER_BYTE_SIZE_H_
