// Router statistics for placing experts (--calibrate FILE): how often each expert of each
// layer is chosen when a calibration text runs through the whole model in this process.
#ifndef SHARDRUN_COORDINATOR_EXPERT_CALIBRATION_H_
#define SHARDRUN_COORDINATOR_EXPERT_CALIBRATION_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/model_file.h"

namespace shardrun {

// Calls per expert, [layer][expert], over the forward pass of `tokens` (at most the model's
// context, batched). Loads the whole model on a CPU backend of `threads` threads for the
// measurement and frees it afterwards.
absl::StatusOr<std::vector<std::vector<double>>> MeasureExpertLoad(const ModelFile& model,
                                                                   std::span<const int32_t> tokens,
                                                                   int threads);

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_EXPERT_CALIBRATION_H_
