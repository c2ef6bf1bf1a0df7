// A compute device that failed: lost (driver reset, hang, unplugged) or out of memory.
//
// A device failure is not the caller's fault and not a passing network problem: the worker
// whose device failed cannot go on serving, so it leaves the cluster and recovery moves its
// shard (worker/worker.cc). It is told apart from other errors with the same code (a peer's
// Unavailable, a full KV cache's ResourceExhausted) by a status payload, which survives every
// hop that passes the status on as it is.
#ifndef SHARDRUN_KERNELS_DEVICE_FAILURE_H_
#define SHARDRUN_KERNELS_DEVICE_FAILURE_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace shardrun {

// The payload's type URL.
inline constexpr std::string_view kDeviceFailureUrl = "shardrun/device-failure";

// An error with `code` and `message`, marked as a device failure.
absl::Status DeviceFailure(absl::StatusCode code, std::string_view message);
bool IsDeviceFailure(const absl::Status& status);

// `status` with the failed device's name attached (device failures only; any other status is
// returned as it is), and that name ("" when none was attached).
absl::Status NameFailedDevice(absl::Status status, std::string_view device);
std::string FailedDeviceName(const absl::Status& status);

}  // namespace shardrun

#endif  // SHARDRUN_KERNELS_DEVICE_FAILURE_H_
