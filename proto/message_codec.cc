#include "proto/message_codec.h"

#include <climits>
#include <optional>

#include "absl/strings/cord.h"
#include "absl/strings/str_format.h"
#include "kernels/tensor_type.h"

namespace shardrun {
namespace {

// The payload that marks a decode failure as caused by a size limit, so that MessageStats can
// tell an oversized message from a malformed one while both stay InvalidArgument.
constexpr char kDropReasonUrl[] = "shardrun/drop_reason";
constexpr char kOversized[] = "oversized";

template <typename... Args>
absl::Status Malformed(const absl::FormatSpec<Args...>& format, const Args&... args) {
  return absl::InvalidArgumentError(absl::StrFormat(format, args...));
}

template <typename... Args>
absl::Status Oversized(const absl::FormatSpec<Args...>& format, const Args&... args) {
  absl::Status status = absl::InvalidArgumentError(absl::StrFormat(format, args...));
  status.SetPayload(kDropReasonUrl, absl::Cord(kOversized));
  return status;
}

const char* BodyName(wire::Envelope::BodyCase body) {
  switch (body) {
    case wire::Envelope::kHello:
      return "hello";
    case wire::Envelope::kWelcome:
      return "welcome";
    case wire::Envelope::kAssign:
      return "assign";
    case wire::Envelope::kLoadProgress:
      return "load progress";
    case wire::Envelope::kWeightChunk:
      return "weight chunk";
    case wire::Envelope::kActivation:
      return "activation";
    case wire::Envelope::kLogits:
      return "logits";
    case wire::Envelope::kEndSequence:
      return "end sequence";
    case wire::Envelope::kHeartbeat:
      return "heartbeat";
    case wire::Envelope::kLeaving:
      return "leaving";
    case wire::Envelope::kShutdown:
      return "shutdown";
    case wire::Envelope::kError:
      return "error";
    case wire::Envelope::kFetchWeights:
      return "fetch weights";
    case wire::Envelope::kPartialSum:
      return "partial sum";
    case wire::Envelope::kExpertRequest:
      return "expert request";
    case wire::Envelope::kExpertReply:
      return "expert reply";
    case wire::Envelope::kChallenge:
      return "challenge";
    case wire::Envelope::kProof:
      return "proof";
    case wire::Envelope::BODY_NOT_SET:
      break;
  }
  return "no body";
}

// The version a handshake body claims, or nullopt for the other bodies.
std::optional<uint32_t> HandshakeVersion(const wire::Envelope& envelope) {
  if (envelope.has_hello()) return envelope.hello().protocol_version();
  if (envelope.has_welcome()) return envelope.welcome().protocol_version();
  return std::nullopt;
}

// How many raw frames follow the envelope for its body.
size_t ExpectedRawFrames(const wire::Envelope& envelope) {
  switch (envelope.body_case()) {
    case wire::Envelope::kActivation:
      return envelope.activation().has_hidden() ? 1 : 0;
    case wire::Envelope::kLogits:
      return 1;
    case wire::Envelope::kWeightChunk:
      return 1;
    case wire::Envelope::kPartialSum:
      return 1;
    case wire::Envelope::kExpertRequest:
      return 1;
    case wire::Envelope::kExpertReply:
      return envelope.expert_reply().has_outputs() ? 1 : 0;
    default:
      return 0;
  }
}

// Bytes of `elements` values of `type`, or nullopt when that does not fit in 64 bits.
std::optional<uint64_t> TypeBytes(wire::ActivationType type, uint64_t elements) {
  uint64_t bytes = 0;
  switch (type) {
    case wire::ACTIVATION_F32:
      if (__builtin_mul_overflow(elements, uint64_t{4}, &bytes)) return std::nullopt;
      return bytes;
    case wire::ACTIVATION_F16:
      if (__builtin_mul_overflow(elements, uint64_t{2}, &bytes)) return std::nullopt;
      return bytes;
    case wire::ACTIVATION_Q8_0:
      if (__builtin_mul_overflow(elements / kQ8_0BlockSize, uint64_t{sizeof(BlockQ8_0)}, &bytes)) {
        return std::nullopt;
      }
      return bytes;
    default:
      break;
  }
  return std::nullopt;
}

// Checks a tensor frame's header against its raw frame; `what` names it ("activation: hidden").
absl::Status CheckTensorFrame(const char* what, const wire::TensorFrame& header,
                              std::span<const uint8_t> frame, const DecodeLimits& limits) {
  if (!wire::ActivationType_IsValid(header.type())) {
    return Malformed("%s: unknown activation type %d", what, static_cast<int>(header.type()));
  }
  const char* type = ActivationTypeName(header.type());
  if (header.shape_size() != 2) {
    return Malformed("%s: shape has %d dimensions, expected 2 (rows, width)", what,
                     header.shape_size());
  }
  const int64_t rows = header.shape(0);
  const int64_t width = header.shape(1);
  if (rows <= 0 || width <= 0) {
    return Malformed("%s: shape [%d, %d] has a dimension that is not positive", what, rows, width);
  }
  if (header.type() == wire::ACTIVATION_Q8_0 && width % kQ8_0BlockSize != 0) {
    return Malformed("%s: q8_0 rows of width %d are not whole blocks of %d", what, width,
                     kQ8_0BlockSize);
  }
  uint64_t elements = 0;
  std::optional<uint64_t> bytes;
  if (!__builtin_mul_overflow(static_cast<uint64_t>(rows), static_cast<uint64_t>(width),
                              &elements)) {
    bytes = TypeBytes(header.type(), elements);
  }
  if (!bytes.has_value() || *bytes > limits.max_tensor_bytes) {
    return Oversized("%s: shape [%d, %d] of %s exceeds the limit of %d bytes", what, rows, width,
                     type, limits.max_tensor_bytes);
  }
  if (header.bytes() < 0 || static_cast<uint64_t>(header.bytes()) != *bytes) {
    return Malformed("%s: header says %d bytes, but shape [%d, %d] of %s takes %d", what,
                     header.bytes(), rows, width, type, *bytes);
  }
  if (frame.size() != *bytes) {
    return Malformed("%s frame has %d bytes, header says %d", what, frame.size(), *bytes);
  }
  return absl::OkStatus();
}

absl::Status CheckActivation(const wire::Activation& a,
                             std::span<const std::span<const uint8_t>> tensors,
                             const DecodeLimits& limits) {
  const int32_t n = a.n_tokens();
  if (n < 1) return Malformed("activation: n_tokens %d is not positive", n);
  if (n > limits.max_tokens) {
    return Oversized("activation: n_tokens %d exceeds the limit of %d", n, limits.max_tokens);
  }
  if (a.pos0() < 0) return Malformed("activation: pos0 %d is negative", a.pos0());
  if (a.pos0() > INT32_MAX - n) {
    return Malformed("activation: positions %d + %d overflow", a.pos0(), n);
  }
  if (a.from_stage() < 0) return Malformed("activation: from_stage %d is negative", a.from_stage());
  if (a.has_hidden()) {
    if (a.tokens_size() != 0) {
      return Malformed("activation: has both %d token ids and a hidden frame", a.tokens_size());
    }
    if (absl::Status s = CheckTensorFrame("activation: hidden", a.hidden(), tensors[0], limits);
        !s.ok()) {
      return s;
    }
    if (a.hidden().shape(0) != n) {
      return Malformed("activation: hidden frame has %d rows, n_tokens is %d", a.hidden().shape(0),
                       n);
    }
    return absl::OkStatus();
  }
  if (a.tokens_size() != n) {
    return Malformed("activation: %d token ids and no hidden frame, n_tokens is %d",
                     a.tokens_size(), n);
  }
  for (int i = 0; i < a.tokens_size(); ++i) {
    if (a.tokens(i) < 0)
      return Malformed("activation: token %d has negative id %d", i, a.tokens(i));
  }
  return absl::OkStatus();
}

absl::Status CheckLogits(const wire::Logits& logits,
                         std::span<const std::span<const uint8_t>> tensors,
                         const DecodeLimits& limits) {
  return CheckTensorFrame("logits: logits", logits.logits(), tensors[0], limits);
}

absl::Status CheckWeightChunk(const wire::WeightChunk& chunk, std::span<const uint8_t> frame) {
  const std::string& name = chunk.tensor();
  if (name.empty()) return Malformed("weight chunk: no tensor name");
  const int64_t total = chunk.tensor_bytes();
  if (total <= 0) return Malformed("weight chunk: tensor %s has %d bytes", name, total);
  if (chunk.offset() < 0 || chunk.offset() >= total) {
    return Malformed("weight chunk: offset %d lies outside tensor %s of %d bytes", chunk.offset(),
                     name, total);
  }
  if (frame.empty()) return Malformed("weight chunk: empty chunk of tensor %s", name);
  // offset < total, so the subtraction cannot overflow; the frame size is a size_t.
  if (frame.size() > static_cast<uint64_t>(total - chunk.offset())) {
    return Malformed("weight chunk: %d bytes at offset %d overrun tensor %s of %d bytes",
                     frame.size(), chunk.offset(), name, total);
  }
  const size_t sha_bytes = chunk.tensor_sha256().size();
  if (sha_bytes != 0 && sha_bytes != 32) {
    return Malformed("weight chunk: tensor_sha256 of %s has %d bytes, expected 32", name,
                     sha_bytes);
  }
  if (chunk.last()) {
    const uint64_t end = static_cast<uint64_t>(chunk.offset()) + frame.size();
    if (end != static_cast<uint64_t>(total)) {
      return Malformed("weight chunk: last chunk of %s ends at %d, the tensor has %d bytes", name,
                       end, total);
    }
    if (sha_bytes == 0)
      return Malformed("weight chunk: last chunk of %s has no tensor_sha256", name);
  }
  return absl::OkStatus();
}

// Bodies without raw frames: only their enums and counts can be wrong.
// The ranges of a file-less worker's Assign lie inside the file and carry a SHA-256, so the
// worker can size its sparse copy and verify what it receives without further checks.
absl::Status CheckFileRanges(const wire::Assign& assign) {
  const int64_t file_size = assign.model_file_size();
  if (file_size < 0) return Malformed("assign: model file size %d", file_size);
  if (assign.ranges_size() > 0 && file_size == 0) {
    return Malformed("assign: file ranges without a model file size");
  }
  for (const wire::FileRange& r : assign.ranges()) {
    if (r.name().empty()) return Malformed("assign: a file range without a name");
    if (r.offset() < 0 || r.bytes() <= 0 || r.offset() > file_size ||
        r.bytes() > file_size - r.offset()) {
      return Malformed("assign: range %s (%d bytes at %d) lies outside the %d-byte file", r.name(),
                       r.bytes(), r.offset(), file_size);
    }
    if (r.sha256().size() != 32) {
      return Malformed("assign: range %s has a %d-byte sha256, expected 32", r.name(),
                       r.sha256().size());
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSmallBody(const wire::Envelope& envelope) {
  switch (envelope.body_case()) {
    case wire::Envelope::kHello: {
      const int backend = envelope.hello().budget().backend();
      if (!wire::Backend_IsValid(backend)) return Malformed("hello: unknown backend %d", backend);
      return absl::OkStatus();
    }
    case wire::Envelope::kAssign: {
      const int type = envelope.assign().activation_type();
      if (!wire::ActivationType_IsValid(type)) {
        return Malformed("assign: unknown activation type %d", type);
      }
      return CheckFileRanges(envelope.assign());
    }
    case wire::Envelope::kFetchWeights:
      for (const std::string& name : envelope.fetch_weights().ranges()) {
        if (name.empty()) return Malformed("fetch weights: a range without a name");
      }
      return absl::OkStatus();
    case wire::Envelope::kLoadProgress: {
      const wire::LoadProgress& p = envelope.load_progress();
      if (p.bytes_done() < 0 || p.bytes_total() < 0 || p.bytes_done() > p.bytes_total()) {
        return Malformed("load progress: %d of %d bytes", p.bytes_done(), p.bytes_total());
      }
      return absl::OkStatus();
    }
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DecodeMessageInto(std::span<const Frame> frames, const DecodeLimits& limits,
                               DecodedMessage* out) {
  return DecodeMessageInto(frames, limits, &out->envelope, &out->tensors);
}

absl::Status DecodeMessageInto(std::span<const Frame> frames, const DecodeLimits& limits,
                               wire::Envelope* envelope_out,
                               std::vector<std::span<const uint8_t>>* tensors) {
  tensors->clear();
  if (frames.empty()) return Malformed("message has no frames");
  const Frame& header = frames[0];
  if (header.size > limits.max_header_bytes || header.size > static_cast<size_t>(INT_MAX)) {
    return Oversized("envelope has %d bytes, the limit is %d", header.size,
                     limits.max_header_bytes);
  }
  wire::Envelope& envelope = *envelope_out;
  if (!envelope.ParseFromArray(header.data, static_cast<int>(header.size))) {
    envelope.Clear();
    return Malformed("malformed envelope (%d bytes)", header.size);
  }

  const wire::Envelope::BodyCase body = envelope.body_case();
  const char* name = BodyName(body);
  if (std::optional<uint32_t> claimed = HandshakeVersion(envelope); claimed.has_value()) {
    // Any version decodes (see the header), but the two fields must tell the same story.
    if (*claimed != envelope.protocol_version()) {
      return Malformed("%s: envelope says protocol version %d, %s says %d", name,
                       envelope.protocol_version(), name, *claimed);
    }
  } else if (envelope.protocol_version() != wire::PROTOCOL_VERSION) {
    return Malformed("%s: protocol version %d, expected %d", name, envelope.protocol_version(),
                     static_cast<int>(wire::PROTOCOL_VERSION));
  }
  if (body == wire::Envelope::BODY_NOT_SET) return Malformed("envelope has no body");
  if (body == wire::Envelope::kLogits && !envelope.logits().has_logits()) {
    return Malformed("logits: no logits tensor frame");
  }
  if (body == wire::Envelope::kPartialSum &&
      envelope.partial_sum().values().type() != wire::ACTIVATION_F32) {
    // Partial sums are added exactly as computed: rounding them would change the results.
    return Malformed("partial sum: values must be f32");
  }

  const size_t expected = ExpectedRawFrames(envelope);
  if (frames.size() - 1 != expected) {
    return Malformed("%s: %d raw frames, expected %d", name, frames.size() - 1, expected);
  }
  for (size_t i = 1; i < frames.size(); ++i) {
    if (frames[i].size > limits.max_tensor_bytes) {
      return Oversized("%s: frame %d has %d bytes, the limit is %d", name, i, frames[i].size,
                       limits.max_tensor_bytes);
    }
    tensors->emplace_back(frames[i].data, frames[i].size);
  }

  switch (body) {
    case wire::Envelope::kActivation:
      return CheckActivation(envelope.activation(), *tensors, limits);
    case wire::Envelope::kLogits:
      return CheckLogits(envelope.logits(), *tensors, limits);
    case wire::Envelope::kWeightChunk:
      return CheckWeightChunk(envelope.weight_chunk(), (*tensors)[0]);
    case wire::Envelope::kPartialSum:
      return CheckTensorFrame("partial sum: values", envelope.partial_sum().values(), (*tensors)[0],
                              limits);
    case wire::Envelope::kExpertRequest: {
      const wire::ExpertRequest& r = envelope.expert_request();
      if (r.inputs().type() != wire::ACTIVATION_F32 || r.inputs().shape_size() != 2 ||
          r.inputs().shape(0) != r.experts_size()) {
        return Malformed("expert request: f32 inputs with one row per expert expected");
      }
      return CheckTensorFrame("expert request: inputs", r.inputs(), (*tensors)[0], limits);
    }
    case wire::Envelope::kExpertReply:
      if (!envelope.expert_reply().has_outputs()) return absl::OkStatus();
      if (envelope.expert_reply().outputs().type() != wire::ACTIVATION_F32) {
        return Malformed("expert reply: outputs must be f32");
      }
      return CheckTensorFrame("expert reply: outputs", envelope.expert_reply().outputs(),
                              (*tensors)[0], limits);
    default:
      break;
  }
  return CheckSmallBody(envelope);
}

absl::StatusOr<DecodedMessage> DecodeMessage(std::span<const Frame> frames,
                                             const DecodeLimits& limits) {
  DecodedMessage message;
  if (absl::Status s = DecodeMessageInto(frames, limits, &message); !s.ok()) return s;
  return message;
}

absl::Status CheckProtocolVersion(const wire::Envelope& envelope) {
  if (envelope.protocol_version() == wire::PROTOCOL_VERSION) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrFormat("peer speaks protocol version %d, this build speaks %d",
                      envelope.protocol_version(), static_cast<int>(wire::PROTOCOL_VERSION)));
}

absl::Status EncodeEnvelope(const wire::Envelope& envelope, std::string* out,
                            size_t max_header_bytes) {
  const size_t size = envelope.ByteSizeLong();
  if (size > max_header_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat("%s envelope has %d bytes, the limit is %d",
                                                      BodyName(envelope.body_case()), size,
                                                      max_header_bytes));
  }
  // resize() keeps the capacity, so a reused string stops allocating once it has grown.
  out->resize(size);
  envelope.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out->data()));
  return absl::OkStatus();
}

wire::Activation* StartActivation(wire::Envelope* envelope) {
  envelope->set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Activation* body = envelope->mutable_activation();
  body->Clear();
  return body;
}

wire::Logits* StartLogits(wire::Envelope* envelope) {
  envelope->set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Logits* body = envelope->mutable_logits();
  body->Clear();
  return body;
}

wire::WeightChunk* StartWeightChunk(wire::Envelope* envelope) {
  envelope->set_protocol_version(wire::PROTOCOL_VERSION);
  wire::WeightChunk* body = envelope->mutable_weight_chunk();
  body->Clear();
  return body;
}

void SetTensorFrame(wire::ActivationType type, int64_t rows, int64_t width,
                    wire::TensorFrame* frame) {
  frame->set_type(type);
  frame->clear_shape();
  frame->add_shape(rows);
  frame->add_shape(width);
  frame->set_bytes(static_cast<int64_t>(
      EncodedActivationBytes(type, static_cast<size_t>(rows), static_cast<size_t>(width))));
}

void MakeFrames(const std::string& header, std::span<const std::span<const uint8_t>> tensors,
                std::vector<Frame>* frames) {
  frames->clear();
  frames->push_back({reinterpret_cast<const uint8_t*>(header.data()), header.size()});
  for (std::span<const uint8_t> t : tensors) frames->push_back({t.data(), t.size()});
}

DropReason DropReasonOf(const absl::Status& status) {
  if (absl::IsPermissionDenied(status) || absl::IsUnauthenticated(status)) {
    return DropReason::kUnauthenticated;
  }
  if (const auto reason = status.GetPayload(kDropReasonUrl);
      reason.has_value() && *reason == kOversized) {
    return DropReason::kOversized;
  }
  if (absl::IsInvalidArgument(status)) return DropReason::kMalformed;
  return DropReason::kUnexpected;
}

absl::Status UnexpectedMessage(std::string_view message) {
  return absl::FailedPreconditionError(std::string(message));
}

void MessageStats::Count(const absl::Status& status) {
  ++received;
  if (status.ok()) return;
  switch (DropReasonOf(status)) {
    case DropReason::kMalformed:
      ++dropped_malformed;
      break;
    case DropReason::kOversized:
      ++dropped_oversized;
      break;
    case DropReason::kUnexpected:
      ++dropped_unexpected;
      break;
    case DropReason::kUnauthenticated:
      ++dropped_unauthenticated;
      break;
  }
}

std::string MessageStats::ToString() const {
  // Unauthenticated drops only exist where peers authenticate; elsewhere they are not shown.
  return absl::StrFormat(
      "received %d, dropped %d (malformed %d, oversized %d, unexpected %d%s)", received, dropped(),
      dropped_malformed, dropped_oversized, dropped_unexpected,
      dropped_unauthenticated > 0 ? absl::StrFormat(", unauthenticated %d", dropped_unauthenticated)
                                  : "");
}

}  // namespace shardrun
