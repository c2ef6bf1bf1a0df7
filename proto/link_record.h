// How a link (proto/local_link.h, proto/tcp_link.h) lays out one message: a record of
// {uint32 total bytes, uint32 frame count}, the frame sizes as uint64, then each frame, every
// part padded to kLinkAlign so that tensors stay aligned for SIMD loads where they are read in
// place. The reader checks every size against the record before it hands out a frame.
#ifndef SHARDRUN_PROTO_LINK_RECORD_H_
#define SHARDRUN_PROTO_LINK_RECORD_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "proto/message_codec.h"

namespace shardrun {

inline constexpr size_t kLinkAlign = 16;
// Frames per message at most (an envelope and a few tensors; more is a broken record).
inline constexpr uint32_t kLinkMaxFrames = 16;

constexpr size_t LinkAlign(size_t n) { return (n + kLinkAlign - 1) & ~(kLinkAlign - 1); }
// Bytes before a record's first frame.
constexpr size_t LinkRecordHeaderBytes(size_t frames) { return LinkAlign(8 + 8 * frames); }

// Bytes of the record that carries `frames`; 0 when there are none or too many.
size_t LinkRecordBytes(std::span<const Frame> frames);
// Writes the record's header (LinkRecordHeaderBytes(frames.size()) bytes) to `out`.
void WriteLinkRecordHeader(std::span<const Frame> frames, size_t record_bytes, uint8_t* out);

enum class LinkRecordRead {
  kComplete,    // *frames point into the record; *total is its size
  kIncomplete,  // the record is longer than the bytes available (*total, once known)
  kBroken,      // *why says how; nothing after it can be trusted
};
// Reads the record at `data`, of which `available` bytes may be read; a record may take at
// most `max_total` bytes.
LinkRecordRead ReadLinkRecord(const uint8_t* data, size_t available, size_t max_total,
                              std::vector<Frame>* frames, size_t* total, std::string* why);

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_LINK_RECORD_H_
