#include "coordinator/weight_streamer.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "partitioner/byte_size.h"
#include "proto/message_codec.h"
#include "spdlog/spdlog.h"
#include "worker/shard_runtime.h"

namespace shardrun {

wire::FileRange WeightStreamer::MakeRange(const std::string& name, uint64_t offset,
                                          uint64_t bytes) {
  auto it = ranges_.find(name);
  if (it == ranges_.end()) {
    wire::FileRange range;
    range.set_name(name);
    range.set_offset(static_cast<int64_t>(offset));
    range.set_bytes(static_cast<int64_t>(bytes));
    const Sha256 hash = HashBytes(model_.bytes().subspan(offset, bytes));
    range.set_sha256(hash.data(), hash.size());
    it = ranges_.emplace(name, std::move(range)).first;
  }
  return it->second;
}

std::vector<wire::FileRange> WeightStreamer::RangesFor(const ModelSlice& slice) {
  const uint8_t* base = model_.bytes().data();
  // The headers end where the first tensor byte (values or scales) begins.
  uint64_t first = model_.file_size();
  for (const TensorView& t : model_.tensors()) {
    first = std::min<uint64_t>(first, t.file_offset);
    if (t.group_scales != nullptr) {
      first = std::min<uint64_t>(first, reinterpret_cast<const uint8_t*>(t.group_scales) - base);
    }
  }
  std::vector<wire::FileRange> ranges;
  if (first > 0) ranges.push_back(MakeRange(kHeaderRange, 0, first));
  for (const TensorView* t : SliceTensors(model_, slice)) {
    ranges.push_back(MakeRange(t->name, t->file_offset, t->bytes));
    if (t->group_scales != nullptr) {
      const uint64_t offset = reinterpret_cast<const uint8_t*>(t->group_scales) - base;
      ranges.push_back(MakeRange(t->name + "#scales", offset, t->total_bytes() - t->bytes));
    }
  }
  return ranges;
}

absl::Status WeightStreamer::Start(const std::string& worker, const wire::FetchWeights& fetch,
                                   const std::vector<wire::FileRange>& offered) {
  Stream stream;
  stream.plan_id = fetch.plan_id();
  for (const std::string& name : fetch.ranges()) {
    auto it = std::find_if(offered.begin(), offered.end(),
                           [&](const wire::FileRange& r) { return r.name() == name; });
    if (it == offered.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("worker ", worker, " asked for range ", name, ", which is not its"));
    }
    stream.ranges.push_back(*it);
    stream.total += it->bytes();
  }
  stream.started = absl::Now();
  stream.last_log = stream.started;
  streams_.erase(worker);
  if (stream.ranges.empty()) {
    spdlog::info("worker {}: streamed 0 bytes (its cache holds all {} ranges)", worker,
                 offered.size());
    return absl::OkStatus();
  }
  spdlog::info("worker {}: streaming {} in {} ranges ({} cached)", worker,
               FormatBytes(stream.total), stream.ranges.size(),
               offered.size() - stream.ranges.size());
  streams_.emplace(worker, std::move(stream));
  return absl::OkStatus();
}

void WeightStreamer::Acknowledge(const std::string& worker, int64_t bytes) {
  if (auto it = streams_.find(worker); it != streams_.end()) {
    it->second.acked = std::max(it->second.acked, bytes);
  }
}

bool WeightStreamer::SendChunk(Channel& channel, const std::string& worker, Stream& stream) {
  const wire::FileRange& range = stream.ranges[stream.range];
  const int64_t n = std::min(kChunkBytes, range.bytes() - stream.offset);
  const bool last = stream.offset + n == range.bytes();
  wire::WeightChunk* chunk = StartWeightChunk(&out_);
  chunk->set_plan_id(stream.plan_id);
  chunk->set_tensor(range.name());
  chunk->set_offset(stream.offset);
  chunk->set_tensor_bytes(range.bytes());
  chunk->set_last(last);
  if (last) chunk->set_tensor_sha256(range.sha256());
  const std::span<const uint8_t> bytes = model_.bytes().subspan(
      static_cast<size_t>(range.offset() + stream.offset), static_cast<size_t>(n));
  if (!channel.Send(out_, {&bytes, 1}, worker).ok()) return false;  // queue full: retry later
  stream.offset += n;
  stream.sent += n;
  ++stream.chunks;
  if (last) {
    ++stream.range;
    stream.offset = 0;
  }
  return true;
}

void WeightStreamer::Pump(Channel& channel, int max_chunks) {
  int sent = 0;
  bool progress = true;
  while (sent < max_chunks && progress && !streams_.empty()) {
    progress = false;
    for (auto it = streams_.begin(); it != streams_.end() && sent < max_chunks;) {
      const std::string& worker = it->first;
      Stream& s = it->second;
      if (s.sent - s.acked < kWindowBytes && SendChunk(channel, worker, s)) {
        ++sent;
        progress = true;
      }
      const absl::Time now = absl::Now();
      if (s.range == s.ranges.size()) {
        spdlog::info("worker {}: streamed {} bytes ({}) in {} chunks, {:.0f} ms", worker, s.sent,
                     FormatBytes(s.sent), s.chunks, absl::ToDoubleMilliseconds(now - s.started));
        it = streams_.erase(it);
        continue;
      }
      if (now - s.last_log > absl::Seconds(1)) {
        spdlog::info("{}: {}/{} streamed", worker, FormatBytes(s.sent), FormatBytes(s.total));
        s.last_log = now;
      }
      ++it;
    }
  }
}

}  // namespace shardrun
