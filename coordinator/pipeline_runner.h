// Pipeline mode: several sequences in flight through the stages at once, so that while one
// stage works on sequence A the next works on sequence B. Each sequence is generated exactly
// as the single-sequence loop would (same prefill batches, same sampler), so its output
// equals its single-process output.
#ifndef SHARDRUN_COORDINATOR_PIPELINE_RUNNER_H_
#define SHARDRUN_COORDINATOR_PIPELINE_RUNNER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "coordinator/coordinator.h"
#include "engine/generator.h"

namespace shardrun {

struct SequenceResult {
  std::vector<int32_t> generated;  // sampled ids, stop token included
  int prefill_tokens = 0;
  absl::Duration elapsed;  // from its first submission to its last token
};

// Generates after every prompt with at most `parallel` sequences in flight; `on_done(i)` is
// called when prompt i finishes. Results are in prompt order.
absl::StatusOr<std::vector<SequenceResult>> RunPipeline(
    Coordinator& coordinator, const std::vector<std::vector<int32_t>>& prompts,
    const GenerateOptions& options, int parallel,
    const std::function<void(size_t index, const SequenceResult&)>& on_done);

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_PIPELINE_RUNNER_H_
