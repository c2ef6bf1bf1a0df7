#include "proto/envelope_arena.h"

namespace shardrun {

EnvelopeArena::EnvelopeArena(size_t block_bytes)
    : block_(new char[block_bytes]),
      arena_(block_.get(), block_bytes),
      envelope_(google::protobuf::Arena::CreateMessage<wire::Envelope>(&arena_)) {}

wire::Envelope& EnvelopeArena::Fresh() {
  arena_.Reset();
  envelope_ = google::protobuf::Arena::CreateMessage<wire::Envelope>(&arena_);
  return *envelope_;
}

}  // namespace shardrun
