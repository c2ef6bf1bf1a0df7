// The framed message codec: checks and builds the multipart messages of the wire protocol,
// independent of the transport.
//
// A message is a list of frames: frame 0 is a serialised wire::Envelope, frames 1.. are raw
// tensor bytes described by the envelope (Activation.hidden, Logits.logits, a WeightChunk's
// bytes). DecodeMessage checks everything a receiver would otherwise have to trust before it
// touches a tensor: frame counts, sizes against shapes and types, bounds that keep size
// arithmetic from overflowing, and the protocol version. Tensor bytes are never copied: a
// decoded message points into the caller's frames, and an encoded one points at the caller's
// buffers. The encodings of hidden states in raw frames are in proto/activation_encoding.h.
//
// Version policy: every message must carry wire::PROTOCOL_VERSION, except the handshake
// (Hello and Welcome). Those decode whatever version they carry so that the coordinator can
// answer a peer of another version with a refusal naming both versions, and that peer can
// read the refusal; the caller checks with CheckProtocolVersion. Hello and Welcome must
// therefore keep their field numbers in every future version.
#ifndef SHARDRUN_PROTO_MESSAGE_CODEC_H_
#define SHARDRUN_PROTO_MESSAGE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/activation_encoding.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

// A view of one frame of a multipart message.
struct Frame {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

struct DecodeLimits {
  size_t max_header_bytes = size_t{64} << 10;  // frame 0
  size_t max_tensor_bytes = size_t{1} << 30;   // each raw frame
  int32_t max_tokens = 65536;                  // Activation.n_tokens; the runtime sets max_batch
};

struct DecodedMessage {
  wire::Envelope envelope;
  // The raw frames in order (frames 1..), checked against the envelope.
  std::vector<std::span<const uint8_t>> tensors;
};

// Parses and checks a message. Every failure is an InvalidArgument naming the body and the
// problem ("activation: hidden frame has 100 bytes, header says 4096"); failures caused by a
// size beyond `limits` are also marked oversized (see DropReasonOf).
absl::StatusOr<DecodedMessage> DecodeMessage(std::span<const Frame> frames,
                                             const DecodeLimits& limits = {});
// The same into `out`, reusing its storage; on failure `out` holds no usable message.
absl::Status DecodeMessageInto(std::span<const Frame> frames, const DecodeLimits& limits,
                               DecodedMessage* out);
// The same into an envelope the caller provides (an arena's: proto/envelope_arena.h) and the
// raw frames into `tensors`.
absl::Status DecodeMessageInto(std::span<const Frame> frames, const DecodeLimits& limits,
                               wire::Envelope* envelope,
                               std::vector<std::span<const uint8_t>>* tensors);

// For a decoded Hello or Welcome: OK when the peer speaks wire::PROTOCOL_VERSION, otherwise
// FailedPrecondition "peer speaks protocol version 2, this build speaks 1" (the text for
// Welcome.reason). Other bodies always pass, DecodeMessage having checked them.
absl::Status CheckProtocolVersion(const wire::Envelope& envelope);

// ---- Encoding --------------------------------------------------------------------------

// Serialises `envelope` into `out`, reusing its capacity (no allocation per message once it
// has grown). Fails when the envelope is larger than `max_header_bytes`, which the receiver
// would refuse.
absl::Status EncodeEnvelope(const wire::Envelope& envelope, std::string* out,
                            size_t max_header_bytes = DecodeLimits{}.max_header_bytes);

// Set the envelope's protocol version and return its body of that kind, cleared; a body
// already of that kind is reused with its allocations (repeated fields keep their capacity).
wire::Activation* StartActivation(wire::Envelope* envelope);
wire::Logits* StartLogits(wire::Envelope* envelope);
wire::WeightChunk* StartWeightChunk(wire::Envelope* envelope);

// Describes `rows` x `width` floats encoded as `type` (width % 32 == 0 for q8_0).
void SetTensorFrame(wire::ActivationType type, int64_t rows, int64_t width,
                    wire::TensorFrame* frame);

// Points `frames` at `header` followed by `tensors` (nothing is copied: they must outlive
// the frames).
void MakeFrames(const std::string& header, std::span<const std::span<const uint8_t>> tensors,
                std::vector<Frame>* frames);

// ---- Drop accounting -------------------------------------------------------------------

enum class DropReason {
  kMalformed,   // the message breaks the protocol (DecodeMessage's InvalidArgument)
  kOversized,   // a size beyond DecodeLimits
  kUnexpected,  // well formed, but not what the receiver's state allows
  // from a peer that is not authenticated or not admitted (dropped before decoding)
  kUnauthenticated,
};

// The reason a non-OK status drops a message: unauthenticated for PermissionDenied and
// Unauthenticated (a sender's standing, never a decode failure), oversized when DecodeMessage
// marked it so, malformed for any other InvalidArgument, unexpected for every other code (the
// runtime's own checks; UnexpectedMessage makes such a status).
DropReason DropReasonOf(const absl::Status& status);
absl::Status UnexpectedMessage(std::string_view message);

// Counts received messages and drops by reason; the runtime logs ToString() now and then.
struct MessageStats {
  uint64_t received = 0;  // every message, dropped or not
  uint64_t dropped_malformed = 0;
  uint64_t dropped_oversized = 0;
  uint64_t dropped_unexpected = 0;
  uint64_t dropped_unauthenticated = 0;

  // Counts one message with its outcome (OK: accepted).
  void Count(const absl::Status& status);
  uint64_t dropped() const {
    return dropped_malformed + dropped_oversized + dropped_unexpected + dropped_unauthenticated;
  }
  // "received 12, dropped 3 (malformed 1, oversized 2, unexpected 0)", and
  // ", unauthenticated N" inside the parentheses when N > 0.
  std::string ToString() const;
};

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_MESSAGE_CODEC_H_
