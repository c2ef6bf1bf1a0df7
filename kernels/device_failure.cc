#include "kernels/device_failure.h"

#include "absl/strings/cord.h"

namespace shardrun {

absl::Status DeviceFailure(absl::StatusCode code, std::string_view message) {
  absl::Status status(code, std::string(message));
  // The payload holds the device's name once the backend knows which device it was.
  status.SetPayload(std::string(kDeviceFailureUrl), absl::Cord());
  return status;
}

bool IsDeviceFailure(const absl::Status& status) {
  return !status.ok() && status.GetPayload(std::string(kDeviceFailureUrl)).has_value();
}

absl::Status NameFailedDevice(absl::Status status, std::string_view device) {
  if (IsDeviceFailure(status)) {
    status.SetPayload(std::string(kDeviceFailureUrl), absl::Cord(std::string(device)));
  }
  return status;
}

std::string FailedDeviceName(const absl::Status& status) {
  const auto payload = status.GetPayload(std::string(kDeviceFailureUrl));
  return payload.has_value() ? std::string(*payload) : "";
}

}  // namespace shardrun
