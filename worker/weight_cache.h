// A worker's local copy of the parts of a model file it was sent, so that a restart does not
// transfer them again.
//
// The copy is a sparse file `<dir>/<model sha256>.model` of the model file's full size: the
// ranges the worker's slices need hold the real bytes, everything else is a hole it never
// reads, so ModelFile::Open parses it like the original. `<dir>/<model sha256>.manifest` lists
// the ranges written and verified, one per line: "<sha256 hex> <offset> <bytes> <name>".
//
// The manifest is a hint, not a proof: a cached range is hashed again before it is trusted
// (cheap next to a transfer), and one whose bytes no longer match (a flipped byte on disk) is
// fetched again. Workers on one host may share the directory: sizing the copy and committing
// the manifest happen under a flock of the copy, and a commit merges the manifest on disk.
#ifndef SHARDRUN_WORKER_WEIGHT_CACHE_H_
#define SHARDRUN_WORKER_WEIGHT_CACHE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

// $XDG_CACHE_HOME/shardrun/weights, else $HOME/.cache/shardrun/weights.
std::string DefaultWeightCacheDir();

class WeightCache {
 public:
  // Opens (creating `dir` and the files if needed) the copy of the model whose SHA-256 is
  // `model_sha256_hex` and whose size is `file_size` bytes.
  static absl::StatusOr<std::unique_ptr<WeightCache>> Open(const std::string& dir,
                                                           const std::string& model_sha256_hex,
                                                           int64_t file_size);
  ~WeightCache();
  WeightCache(const WeightCache&) = delete;
  WeightCache& operator=(const WeightCache&) = delete;

  const std::string& path() const { return path_; }

  // The names of `ranges` the copy does not hold with matching bytes.
  std::vector<std::string> Missing(
      const google::protobuf::RepeatedPtrField<wire::FileRange>& ranges);
  // Writes `data` at `offset` within `range`.
  absl::Status Write(const wire::FileRange& range, int64_t offset, std::span<const uint8_t> data);
  // Hashes `range` as written; on a match records it as held, otherwise fails naming it.
  absl::Status Verify(const wire::FileRange& range);
  // Makes the data and the manifest durable (fsync, then an atomic rename of the manifest).
  absl::Status Commit();

 private:
  WeightCache(std::string path, std::string manifest_path, int fd, const uint8_t* map, size_t size)
      : path_(std::move(path)),
        manifest_path_(std::move(manifest_path)),
        fd_(fd),
        map_(map),
        size_(size) {}
  bool Holds(const wire::FileRange& range) const;
  // The manifest's lines by range name (the caller holds the file lock).
  std::map<std::string, std::string> ReadManifest() const;

  std::string path_;
  std::string manifest_path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;  // the whole file, shared: sees what Write puts there
  size_t size_ = 0;
  // Verified ranges by name: their manifest line.
  std::map<std::string, std::string> held_;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_WEIGHT_CACHE_H_
