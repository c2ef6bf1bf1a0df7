#include "proto/link_record.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace shardrun {

size_t LinkRecordBytes(std::span<const Frame> frames) {
  if (frames.empty() || frames.size() > kLinkMaxFrames) return 0;
  size_t bytes = LinkRecordHeaderBytes(frames.size());
  for (const Frame& f : frames) {
    if (f.size > (size_t{1} << 40)) return 0;  // keeps the sum from overflowing
    bytes += LinkAlign(f.size);
  }
  return bytes;
}

void WriteLinkRecordHeader(std::span<const Frame> frames, size_t record_bytes, uint8_t* out) {
  const uint32_t fields[2] = {static_cast<uint32_t>(record_bytes),
                              static_cast<uint32_t>(frames.size())};
  std::memcpy(out, fields, sizeof(fields));
  for (size_t f = 0; f < frames.size(); ++f) {
    const uint64_t size = frames[f].size;
    std::memcpy(out + 8 + 8 * f, &size, sizeof(size));
  }
  const size_t written = 8 + 8 * frames.size();
  std::memset(out + written, 0, LinkRecordHeaderBytes(frames.size()) - written);
}

LinkRecordRead ReadLinkRecord(const uint8_t* data, size_t available, size_t max_total,
                              std::vector<Frame>* frames, size_t* total, std::string* why) {
  frames->clear();
  *total = 0;
  if (available < 8) return LinkRecordRead::kIncomplete;
  uint32_t fields[2];
  std::memcpy(fields, data, sizeof(fields));
  const size_t bytes = fields[0];
  const uint32_t count = fields[1];
  if (bytes < kLinkAlign || bytes % kLinkAlign != 0 || bytes > max_total) {
    *why = absl::StrCat("a record of ", bytes, " bytes (at most ", max_total, ")");
    return LinkRecordRead::kBroken;
  }
  if (count == 0 || count > kLinkMaxFrames || LinkRecordHeaderBytes(count) > bytes) {
    *why = absl::StrCat("a record of ", count, " frames in ", bytes, " bytes");
    return LinkRecordRead::kBroken;
  }
  *total = bytes;
  if (bytes > available) return LinkRecordRead::kIncomplete;
  size_t at = LinkRecordHeaderBytes(count);
  for (uint32_t f = 0; f < count; ++f) {
    uint64_t size = 0;
    std::memcpy(&size, data + 8 + 8 * f, sizeof(size));
    if (size > bytes - at) {
      *why = absl::StrCat("frame ", f, " of ", size, " bytes beyond its record of ", bytes);
      frames->clear();
      return LinkRecordRead::kBroken;
    }
    frames->push_back({data + at, static_cast<size_t>(size)});
    at += LinkAlign(static_cast<size_t>(size));
  }
  return LinkRecordRead::kComplete;
}

}  // namespace shardrun
