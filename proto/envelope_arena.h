// An envelope whose storage is reused message after message.
//
// A long-lived wire::Envelope is not enough to keep the per-token path free of allocation:
// protobuf frees a oneof body and every singular sub-message on Clear() (and before parsing),
// so each activation or logits message would cost several new/delete pairs. An envelope on an
// arena whose first block we own is dropped wholesale by Arena::Reset(), which keeps that block:
// once the block fits the largest per-token message, building or parsing one allocates nothing.
#ifndef SHARDRUN_PROTO_ENVELOPE_ARENA_H_
#define SHARDRUN_PROTO_ENVELOPE_ARENA_H_

#include <cstddef>
#include <memory>

#include "google/protobuf/arena.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

class EnvelopeArena {
 public:
  // `block_bytes` covers any per-token message with room to spare (a few hundred bytes of
  // envelope plus the timings of every stage); larger ones (an Assign) borrow further blocks,
  // returned at the next Fresh().
  explicit EnvelopeArena(size_t block_bytes = size_t{32} << 10);
  EnvelopeArena(const EnvelopeArena&) = delete;
  EnvelopeArena& operator=(const EnvelopeArena&) = delete;

  // Ends the current envelope (references to it dangle from here) and returns an empty one.
  wire::Envelope& Fresh();
  wire::Envelope& current() { return *envelope_; }
  const wire::Envelope& current() const { return *envelope_; }

 private:
  std::unique_ptr<char[]> block_;
  google::protobuf::Arena arena_;
  wire::Envelope* envelope_;
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_ENVELOPE_ARENA_H_
