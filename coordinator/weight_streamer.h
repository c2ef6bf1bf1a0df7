// The coordinator's side of streaming weights to workers without the model file.
//
// A file-less worker's Assign lists the byte ranges of the model file its slice needs (the
// headers and each tensor), each with its SHA-256. The worker answers with the ranges it does
// not hold yet (FetchWeights); the streamer sends those as 1 MiB WeightChunks, a bounded
// number per call so that the coordinator's loop keeps serving heartbeats, and at most a
// window ahead of what the worker has acknowledged (its LoadProgress), so that a slow worker
// does not make the coordinator queue the whole slice in memory.
#ifndef SHARDRUN_COORDINATOR_WEIGHT_STREAMER_H_
#define SHARDRUN_COORDINATOR_WEIGHT_STREAMER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/model_slice.h"
#include "model/content_hash.h"
#include "model/model_file.h"
#include "proto/channel.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

// The range name of the file's headers: bytes [0, first tensor byte).
inline constexpr char kHeaderRange[] = "#header";

class WeightStreamer {
 public:
  static constexpr int64_t kChunkBytes = int64_t{1} << 20;
  static constexpr int64_t kWindowBytes = int64_t{16} << 20;  // unacknowledged, per worker

  explicit WeightStreamer(const ModelFile& model) : model_(model) {}

  // The header range and the ranges of the slice's tensors (a kQ8Group tensor's scales are a
  // range of their own, "<name>#scales"), with their SHA-256, computed once per range.
  std::vector<wire::FileRange> RangesFor(const ModelSlice& slice);

  // Queues the ranges `fetch` names for `worker`; each must be one of `offered` (the ranges of
  // its Assign). Replaces any stream still going to that worker.
  absl::Status Start(const std::string& worker, const wire::FetchWeights& fetch,
                     const std::vector<wire::FileRange>& offered);
  // `worker` reports `bytes` of its stream received.
  void Acknowledge(const std::string& worker, int64_t bytes);
  // Sends up to `max_chunks` chunks over `channel`, round robin over the workers; a worker
  // whose window is full or whose send queue is full waits for a later call.
  void Pump(Channel& channel, int max_chunks);
  // Whether any stream has chunks left to send.
  bool busy() const { return !streams_.empty(); }
  void Cancel(const std::string& worker) { streams_.erase(worker); }

 private:
  struct Stream {
    uint64_t plan_id = 0;
    std::vector<wire::FileRange> ranges;
    size_t range = 0;    // the range being sent
    int64_t offset = 0;  // within it
    int64_t sent = 0;    // bytes, all ranges
    int64_t acked = 0;
    int64_t total = 0;
    int64_t chunks = 0;
    absl::Time started;
    absl::Time last_log;
  };
  // Sends the next chunk of `stream`; false when it could not be queued.
  bool SendChunk(Channel& channel, const std::string& worker, Stream& stream);
  wire::FileRange MakeRange(const std::string& name, uint64_t offset, uint64_t bytes);

  const ModelFile& model_;
  std::map<std::string, Stream> streams_;
  std::map<std::string, wire::FileRange> ranges_;  // by name, hashed once
  wire::Envelope out_;
};

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_WEIGHT_STREAMER_H_
