// A file-less worker's side of weight streaming for one Assign: works out which of the
// offered file ranges its cache lacks, writes the chunks that arrive into the cache's sparse
// copy of the model file, verifies each range by its SHA-256, and opens the copy once every
// range is present.
#ifndef SHARDRUN_WORKER_WEIGHT_RECEIVER_H_
#define SHARDRUN_WORKER_WEIGHT_RECEIVER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/model_file.h"
#include "proto/shardrun.pb.h"
#include "worker/weight_cache.h"

namespace shardrun {

class WeightReceiver {
 public:
  // Opens the cache in `cache_dir` for the model `assign` names and finds what is missing.
  static absl::StatusOr<std::unique_ptr<WeightReceiver>> Begin(const wire::Assign& assign,
                                                               const std::string& cache_dir);

  const wire::Assign& assign() const { return assign_; }
  // The ranges to request (FetchWeights), in the Assign's order; empty when all are cached.
  const std::vector<std::string>& missing() const { return missing_; }
  int64_t bytes_done() const { return bytes_done_; }
  int64_t bytes_total() const { return bytes_total_; }
  bool complete() const { return ranges_left_ == 0; }

  // Writes one chunk; after a range's last chunk, verifies the range (an error names it).
  // Chunks of a range must arrive in order.
  absl::Status Receive(const wire::WeightChunk& chunk, std::span<const uint8_t> bytes);
  // Once complete(): makes the cache durable and opens the copy as a model file.
  absl::StatusOr<std::unique_ptr<ModelFile>> Finish();

 private:
  struct Pending {
    const wire::FileRange* range = nullptr;
    int64_t received = 0;
  };
  WeightReceiver() = default;

  wire::Assign assign_;
  std::unique_ptr<WeightCache> cache_;
  std::vector<std::string> missing_;
  std::map<std::string, Pending> pending_;  // missing ranges by name
  size_t ranges_left_ = 0;
  int64_t bytes_done_ = 0;
  int64_t bytes_total_ = 0;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_WEIGHT_RECEIVER_H_
