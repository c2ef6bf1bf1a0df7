#include "worker/weight_receiver.h"

#include "absl/strings/str_cat.h"
#include "model/content_hash.h"
#include "spdlog/spdlog.h"

namespace shardrun {

absl::StatusOr<std::unique_ptr<WeightReceiver>> WeightReceiver::Begin(
    const wire::Assign& assign, const std::string& cache_dir) {
  if (assign.ranges().empty() || assign.model_file_size() <= 0) {
    return absl::FailedPreconditionError(
        "this worker has no model file and the assignment lists no weights to stream");
  }
  if (assign.model_hash().size() != sizeof(Sha256)) {
    return absl::InvalidArgumentError("the assignment has no model sha256");
  }
  std::unique_ptr<WeightReceiver> r(new WeightReceiver());
  r->assign_ = assign;
  Sha256 model_hash{};
  std::copy(assign.model_hash().begin(), assign.model_hash().end(), model_hash.begin());
  auto cache = WeightCache::Open(cache_dir, HexDigest(model_hash), assign.model_file_size());
  if (!cache.ok()) return cache.status();
  r->cache_ = *std::move(cache);
  r->missing_ = r->cache_->Missing(r->assign_.ranges());
  for (const std::string& name : r->missing_) {
    for (const wire::FileRange& range : r->assign_.ranges()) {
      if (range.name() == name && !r->pending_.contains(name)) {
        r->pending_[name] = Pending{&range, 0};
        r->bytes_total_ += range.bytes();
      }
    }
  }
  r->ranges_left_ = r->pending_.size();
  return r;
}

absl::Status WeightReceiver::Receive(const wire::WeightChunk& chunk,
                                     std::span<const uint8_t> bytes) {
  auto it = pending_.find(chunk.tensor());
  if (it == pending_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight chunk of ", chunk.tensor(), ", which was not requested"));
  }
  Pending& p = it->second;
  const wire::FileRange& range = *p.range;
  if (chunk.tensor_bytes() != range.bytes() || chunk.offset() != p.received) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight chunk of ", range.name(), " at ", chunk.offset(), " of ", chunk.tensor_bytes(),
        " bytes; expected offset ", p.received, " of ", range.bytes()));
  }
  if (absl::Status s = cache_->Write(range, chunk.offset(), bytes); !s.ok()) return s;
  p.received += static_cast<int64_t>(bytes.size());
  bytes_done_ += static_cast<int64_t>(bytes.size());
  if (!chunk.last()) return absl::OkStatus();
  if (chunk.tensor_sha256() != range.sha256()) {
    return absl::DataLossError(absl::StrCat("tensor ", range.name(),
                                            ": the chunk's sha256 differs from the assignment's"));
  }
  if (absl::Status s = cache_->Verify(range); !s.ok()) return s;
  pending_.erase(it);
  --ranges_left_;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ModelFile>> WeightReceiver::Finish() {
  if (!complete()) return absl::FailedPreconditionError("weights are still streaming");
  if (absl::Status s = cache_->Commit(); !s.ok()) return s;
  // Headers parse from the "#header" range; the slice's tensors are real; the other tensors
  // are holes that this worker never reads.
  return ModelFile::Open(cache_->path());
}

}  // namespace shardrun
