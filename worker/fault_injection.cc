#include "worker/fault_injection.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace shardrun {

Fault::Kind Fault::FireAt(uint64_t at_step) {
  if (kind == Kind::kNone || kind == Kind::kKillAtLoad || kind == Kind::kGpuOomAtLoad ||
      kind == Kind::kSlow || kind == Kind::kGpuLostAtServe || at_step != step) {
    return Kind::kNone;
  }
  const Kind fired = kind;
  kind = Kind::kNone;  // spent
  return fired;
}

Fault::Kind Fault::FireAtServe(uint64_t served) {
  if (kind != Kind::kGpuLostAtServe || served != step) return Kind::kNone;
  kind = Kind::kNone;  // spent
  return Kind::kGpuLostAtServe;
}

absl::StatusOr<Fault> ParseFault(const std::string& spec) {
  Fault fault;
  if (spec.empty()) return fault;
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("--inject ", spec,
                     ": expected kill@step=N, kill@load, stall@step=N:ms=M, drop@step=N, "
                     "duplicate@step=N, corrupt@step=N, slow@ms=M, slow@x=F, gpu-lost@step=N, "
                     "gpu-lost@serve=N or gpu-oom@load"));
  };
  const std::vector<std::string> parts = absl::StrSplit(spec, '@');
  if (parts.size() != 2) return bad();
  const std::string& what = parts[0];
  if (what == "slow" && parts[1].starts_with("ms=") &&
      absl::SimpleAtoi(parts[1].substr(3), &fault.stall_ms) && fault.stall_ms > 0) {
    fault.kind = Fault::Kind::kSlow;
    return fault;
  }
  if (what == "slow" && parts[1].starts_with("x=") &&
      absl::SimpleAtod(parts[1].substr(2), &fault.slow_factor) && fault.slow_factor >= 1.0) {
    fault.kind = Fault::Kind::kSlow;
    return fault;
  }
  if (what == "kill" && parts[1] == "load") {
    fault.kind = Fault::Kind::kKillAtLoad;
    return fault;
  }
  if (what == "gpu-lost" && parts[1].starts_with("serve=") &&
      absl::SimpleAtoi(parts[1].substr(6), &fault.step) && fault.step > 0) {
    fault.kind = Fault::Kind::kGpuLostAtServe;
    return fault;
  }
  if (what == "gpu-oom" && parts[1] == "load") {
    fault.kind = Fault::Kind::kGpuOomAtLoad;
    return fault;
  }
  if (what == "kill") {
    fault.kind = Fault::Kind::kKill;
  } else if (what == "gpu-lost") {
    fault.kind = Fault::Kind::kGpuLost;
  } else if (what == "stall") {
    fault.kind = Fault::Kind::kStall;
  } else if (what == "drop") {
    fault.kind = Fault::Kind::kDrop;
  } else if (what == "duplicate") {
    fault.kind = Fault::Kind::kDuplicate;
  } else if (what == "corrupt") {
    fault.kind = Fault::Kind::kCorrupt;
  } else {
    return bad();
  }
  bool has_step = false;
  for (const std::string& field : std::vector<std::string>(absl::StrSplit(parts[1], ':'))) {
    const std::vector<std::string> kv = absl::StrSplit(field, '=');
    if (kv.size() != 2) return bad();
    if (kv[0] == "step" && absl::SimpleAtoi(kv[1], &fault.step)) {
      has_step = true;
    } else if (kv[0] == "ms" && absl::SimpleAtoi(kv[1], &fault.stall_ms) && fault.stall_ms >= 0) {
    } else {
      return bad();
    }
  }
  if (!has_step || (fault.kind == Fault::Kind::kStall && fault.stall_ms == 0)) return bad();
  return fault;
}

}  // namespace shardrun
