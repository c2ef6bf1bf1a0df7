#include "proto/message_codec.h"

#include <google/protobuf/util/message_differencer.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/quantize.h"
#include "kernels/tensor_type.h"

namespace shardrun {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// A message as a sender would put it on the wire: the serialised envelope and owned tensor
// buffers, with frames pointing at both.
struct WireMessage {
  std::string header;
  std::vector<std::vector<uint8_t>> tensors;
  std::vector<Frame> frames;

  std::span<const Frame> Frames() {
    std::vector<std::span<const uint8_t>> views(tensors.begin(), tensors.end());
    MakeFrames(header, views, &frames);
    return frames;
  }
};

WireMessage Encode(const wire::Envelope& envelope, std::vector<std::vector<uint8_t>> tensors) {
  WireMessage message;
  const absl::Status status = EncodeEnvelope(envelope, &message.header);
  EXPECT_TRUE(status.ok()) << status;
  message.tensors = std::move(tensors);
  return message;
}

// Decodes and expects failure with a message containing `text`.
absl::Status DecodeError(WireMessage message, const DecodeLimits& limits = {}) {
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage(message.Frames(), limits);
  EXPECT_FALSE(decoded.ok()) << decoded->envelope.DebugString();
  return decoded.status();
}

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<uint8_t> Encoded(wire::ActivationType type, std::span<const float> x) {
  std::vector<uint8_t> bytes(EncodedActivationBytes(type, 1, x.size()));
  EncodeActivations(type, x, bytes.data());
  return bytes;
}

wire::Envelope TokenActivation(int n_tokens) {
  wire::Envelope envelope;
  wire::Activation* a = StartActivation(&envelope);
  a->set_sequence_id(7);
  a->set_step(3);
  a->set_pos0(12);
  a->set_n_tokens(n_tokens);
  for (int i = 0; i < n_tokens; ++i) a->add_tokens(100 + i);
  return envelope;
}

wire::Envelope HiddenActivation(wire::ActivationType type, int64_t rows, int64_t width) {
  wire::Envelope envelope;
  wire::Activation* a = StartActivation(&envelope);
  a->set_sequence_id(7);
  a->set_step(4);
  a->set_pos0(5);
  a->set_n_tokens(static_cast<int32_t>(rows));
  a->set_from_stage(1);
  a->set_sent_at_us(123456789);
  SetTensorFrame(type, rows, width, a->mutable_hidden());
  return envelope;
}

wire::Envelope Chunk(int64_t offset, int64_t tensor_bytes, bool last) {
  wire::Envelope envelope;
  wire::WeightChunk* c = StartWeightChunk(&envelope);
  c->set_plan_id(9);
  c->set_tensor("blk.0.attn_q.weight");
  c->set_offset(offset);
  c->set_tensor_bytes(tensor_bytes);
  c->set_last(last);
  if (last) c->set_tensor_sha256(std::string(32, '\x5a'));
  return envelope;
}

// ---- Round trips -----------------------------------------------------------------------

void ExpectRoundTrip(const wire::Envelope& envelope, std::vector<std::vector<uint8_t>> tensors) {
  WireMessage message = Encode(envelope, tensors);
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage(message.Frames());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(MessageDifferencer::Equals(decoded->envelope, envelope))
      << decoded->envelope.DebugString() << "\nvs\n"
      << envelope.DebugString();
  ASSERT_EQ(decoded->tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    // The decoded tensor is the sender's buffer itself: nothing was copied.
    EXPECT_EQ(decoded->tensors[i].data(), message.tensors[i].data());
    EXPECT_EQ(decoded->tensors[i].size(), tensors[i].size());
  }
}

TEST(MessageCodecTest, HandshakeRoundTrips) {
  wire::Envelope hello;
  hello.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Hello* h = hello.mutable_hello();
  h->set_protocol_version(wire::PROTOCOL_VERSION);
  h->set_worker_id("worker-3");
  h->mutable_budget()->set_memory_bytes(int64_t{3} << 30);
  h->mutable_budget()->set_threads(4);
  h->mutable_budget()->set_backend(wire::BACKEND_VULKAN);
  h->mutable_capabilities()->set_simd_level("avx2");
  h->mutable_capabilities()->set_cores(8);
  h->mutable_capabilities()->set_has_model_file(true);
  h->set_model_hash(std::string(32, '\x01'));
  h->set_data_endpoint("tcp://127.0.0.1:5601");
  ExpectRoundTrip(hello, {});

  wire::Envelope welcome;
  welcome.set_protocol_version(wire::PROTOCOL_VERSION);
  welcome.mutable_welcome()->set_protocol_version(wire::PROTOCOL_VERSION);
  welcome.mutable_welcome()->set_accepted(true);
  welcome.mutable_welcome()->set_heartbeat_interval_ms(500);
  welcome.mutable_welcome()->set_coordinator_timeout_ms(5000);
  ExpectRoundTrip(welcome, {});
}

TEST(MessageCodecTest, PlanMessagesRoundTrip) {
  wire::Envelope assign;
  assign.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Assign* a = assign.mutable_assign();
  a->set_plan_id(42);
  a->set_stage(2);
  a->mutable_slice()->set_layer_begin(4);
  a->mutable_slice()->set_layer_end(8);
  a->mutable_slice()->set_head(true);
  a->mutable_kv_heads()->set_end(8);
  a->mutable_ffn_columns()->set_begin(256);
  a->mutable_ffn_columns()->set_end(512);
  wire::ExpertRef* e = a->add_experts();
  e->set_layer(5);
  e->set_expert(3);
  a->set_context_length(2048);
  a->set_max_batch(64);
  a->set_max_sequences(4);
  a->add_next_endpoints("tcp://10.0.0.2:5602");
  a->set_activation_type(wire::ACTIVATION_Q8_0);
  ExpectRoundTrip(assign, {});

  wire::Envelope progress;
  progress.set_protocol_version(wire::PROTOCOL_VERSION);
  progress.mutable_load_progress()->set_plan_id(42);
  progress.mutable_load_progress()->set_bytes_done(10);
  progress.mutable_load_progress()->set_bytes_total(100);
  ExpectRoundTrip(progress, {});

  ExpectRoundTrip(Chunk(0, 64, false), {std::vector<uint8_t>(32, 1)});
  ExpectRoundTrip(Chunk(32, 64, true), {std::vector<uint8_t>(32, 2)});

  // A file-less worker's Assign lists its file ranges; it answers with FetchWeights.
  a->set_model_file_size(4096);
  wire::FileRange* r = a->add_ranges();
  r->set_name("#header");
  r->set_offset(0);
  r->set_bytes(256);
  r->set_sha256(std::string(32, 'h'));
  ExpectRoundTrip(assign, {});
  wire::Envelope fetch;
  fetch.set_protocol_version(wire::PROTOCOL_VERSION);
  fetch.mutable_fetch_weights()->set_plan_id(42);
  fetch.mutable_fetch_weights()->add_ranges("#header");
  ExpectRoundTrip(fetch, {});
  fetch.mutable_fetch_weights()->clear_ranges();
  ExpectRoundTrip(fetch, {});  // everything cached
}

TEST(MessageCodecTest, RejectsBadFileRanges) {
  auto assign_error = [](int64_t file_size, int64_t offset, int64_t bytes, size_t sha_bytes,
                         const std::string& name) {
    wire::Envelope envelope;
    envelope.set_protocol_version(wire::PROTOCOL_VERSION);
    envelope.mutable_assign()->set_model_file_size(file_size);
    wire::FileRange* r = envelope.mutable_assign()->add_ranges();
    r->set_name(name);
    r->set_offset(offset);
    r->set_bytes(bytes);
    r->set_sha256(std::string(sha_bytes, 's'));
    return std::string(DecodeError(Encode(envelope, {})).message());
  };
  EXPECT_THAT(assign_error(0, 0, 8, 32, "t"), HasSubstr("file ranges without a model file size"));
  EXPECT_THAT(assign_error(-1, 0, 8, 32, "t"), HasSubstr("model file size -1"));
  EXPECT_THAT(assign_error(100, 0, 8, 32, ""), HasSubstr("a file range without a name"));
  EXPECT_THAT(assign_error(100, 96, 8, 32, "t"),
              HasSubstr("range t (8 bytes at 96) lies outside the 100-byte file"));
  EXPECT_THAT(assign_error(100, -4, 8, 32, "t"), HasSubstr("lies outside"));
  EXPECT_THAT(assign_error(100, 0, 0, 32, "t"), HasSubstr("lies outside"));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(assign_error(kMax, kMax - 4, 8, 32, "t"), HasSubstr("lies outside"));
  EXPECT_THAT(assign_error(100, 0, 8, 31, "t"), HasSubstr("range t has a 31-byte sha256"));

  wire::Envelope fetch;
  fetch.set_protocol_version(wire::PROTOCOL_VERSION);
  fetch.mutable_fetch_weights()->add_ranges("");
  EXPECT_THAT(std::string(DecodeError(Encode(fetch, {})).message()),
              HasSubstr("fetch weights: a range without a name"));
}

TEST(MessageCodecTest, RunningMessagesRoundTrip) {
  ExpectRoundTrip(TokenActivation(5), {});
  for (wire::ActivationType type :
       {wire::ACTIVATION_F32, wire::ACTIVATION_F16, wire::ACTIVATION_Q8_0}) {
    const std::vector<float> x = RandomFloats(3 * 64, 1);
    ExpectRoundTrip(HiddenActivation(type, 3, 64), {Encoded(type, x)});
  }

  wire::Envelope logits;
  wire::Logits* l = StartLogits(&logits);
  l->set_sequence_id(7);
  l->set_step(4);
  SetTensorFrame(wire::ACTIVATION_F32, 1, 512, l->mutable_logits());
  wire::StageTiming* t = l->add_timings();
  t->set_stage(0);
  t->set_compute_us(1500);
  t->set_wait_us(20);
  ExpectRoundTrip(logits, {std::vector<uint8_t>(512 * 4, 0)});

  wire::Envelope small;
  small.set_protocol_version(wire::PROTOCOL_VERSION);
  small.mutable_end_sequence()->set_sequence_id(7);
  ExpectRoundTrip(small, {});
  small.mutable_heartbeat()->set_sent_at_us(99);
  small.mutable_heartbeat()->set_step_time_us(1200);
  ExpectRoundTrip(small, {});
  small.mutable_leaving()->set_reason("tab closed");
  ExpectRoundTrip(small, {});
  small.mutable_shutdown()->set_reason("done");
  ExpectRoundTrip(small, {});
  small.mutable_error()->set_message("out of memory");
  small.mutable_error()->set_sequence_id(7);
  ExpectRoundTrip(small, {});
}

TEST(MessageCodecTest, DecodedHiddenStateMatchesSender) {
  const std::vector<float> x = RandomFloats(2 * 96, 2);
  WireMessage message =
      Encode(HiddenActivation(wire::ACTIVATION_F32, 2, 96), {Encoded(wire::ACTIVATION_F32, x)});
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage(message.Frames());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  std::vector<float> y(x.size());
  ASSERT_TRUE(
      DecodeActivations(decoded->envelope.activation().hidden().type(), decoded->tensors[0], y)
          .ok());
  EXPECT_EQ(y, x);
}

TEST(MessageCodecTest, DecodeIntoReusesTheMessage) {
  DecodedMessage out;
  WireMessage hidden =
      Encode(HiddenActivation(wire::ACTIVATION_F16, 1, 32), {std::vector<uint8_t>(64, 0)});
  ASSERT_TRUE(DecodeMessageInto(hidden.Frames(), {}, &out).ok());
  EXPECT_EQ(out.tensors.size(), 1u);
  WireMessage tokens = Encode(TokenActivation(2), {});
  ASSERT_TRUE(DecodeMessageInto(tokens.Frames(), {}, &out).ok());
  EXPECT_TRUE(out.tensors.empty());
  EXPECT_FALSE(out.envelope.activation().has_hidden());
  EXPECT_EQ(out.envelope.activation().tokens_size(), 2);
}

// ---- Envelope-level errors -------------------------------------------------------------

TEST(MessageCodecTest, RejectsNoFrames) {
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage({});
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(decoded.status()));
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("no frames"));
}

TEST(MessageCodecTest, RejectsOversizedEnvelope) {
  wire::Envelope envelope;
  envelope.set_protocol_version(wire::PROTOCOL_VERSION);
  envelope.mutable_error()->set_message(std::string(70000, 'x'));
  std::string header;
  EXPECT_FALSE(EncodeEnvelope(envelope, &header).ok());  // the sender refuses too
  ASSERT_TRUE(EncodeEnvelope(envelope, &header, 1 << 20).ok());
  const Frame frame{reinterpret_cast<const uint8_t*>(header.data()), header.size()};
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage({&frame, 1});
  ASSERT_FALSE(decoded.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(decoded.status()));
  EXPECT_EQ(DropReasonOf(decoded.status()), DropReason::kOversized);
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("limit is 65536"));
  // A larger limit accepts it.
  DecodeLimits limits;
  limits.max_header_bytes = 1 << 20;
  EXPECT_TRUE(DecodeMessage({&frame, 1}, limits).ok());
}

TEST(MessageCodecTest, RejectsGarbage) {
  const std::vector<uint8_t> garbage(40, 0xff);
  const Frame frame{garbage.data(), garbage.size()};
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage({&frame, 1});
  ASSERT_FALSE(decoded.ok());
  EXPECT_THAT(std::string(decoded.status().message()), HasSubstr("malformed envelope"));
  EXPECT_EQ(DropReasonOf(decoded.status()), DropReason::kMalformed);
}

TEST(MessageCodecTest, RejectsTruncatedEnvelope) {
  WireMessage message = Encode(TokenActivation(4), {});
  const std::string full = message.header;
  // The envelope ends inside its activation's packed token ids: every cut that lands inside
  // a length-delimited field fails to parse; none may decode to the full message.
  int malformed = 0;
  for (size_t cut = 1; cut < full.size(); ++cut) {
    message.header = full.substr(0, cut);
    absl::StatusOr<DecodedMessage> decoded = DecodeMessage(message.Frames());
    if (decoded.ok()) {
      EXPECT_FALSE(MessageDifferencer::Equals(decoded->envelope, TokenActivation(4))) << cut;
    } else if (decoded.status().message().find("malformed envelope") != std::string::npos) {
      ++malformed;
    }
  }
  EXPECT_GT(malformed, 0);
  message.header = full.substr(0, full.size() - 1);
  EXPECT_THAT(std::string(DecodeError(message).message()), HasSubstr("malformed envelope"));
}

TEST(MessageCodecTest, RejectsWrongVersion) {
  wire::Envelope envelope = TokenActivation(1);
  envelope.set_protocol_version(2);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()),
              HasSubstr("activation: protocol version 2, expected 1"));
  envelope.clear_protocol_version();
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()),
              HasSubstr("protocol version 0"));
}

TEST(MessageCodecTest, HandshakeOfAnotherVersionDecodesForTheRefusal) {
  wire::Envelope hello;
  hello.set_protocol_version(2);
  hello.mutable_hello()->set_protocol_version(2);
  hello.mutable_hello()->set_worker_id("future");
  WireMessage message = Encode(hello, {});
  absl::StatusOr<DecodedMessage> decoded = DecodeMessage(message.Frames());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const absl::Status version = CheckProtocolVersion(decoded->envelope);
  EXPECT_TRUE(absl::IsFailedPrecondition(version));
  EXPECT_EQ(version.message(), "peer speaks protocol version 2, this build speaks 1");

  // The refusal itself must reach a peer of another version.
  wire::Envelope welcome;
  welcome.set_protocol_version(5);
  welcome.mutable_welcome()->set_protocol_version(5);
  welcome.mutable_welcome()->set_reason("peer speaks protocol version 1, this build speaks 5");
  WireMessage refusal = Encode(welcome, {});
  decoded = DecodeMessage(refusal.Frames());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(CheckProtocolVersion(decoded->envelope).ok());

  // The envelope and the body must agree.
  hello.mutable_hello()->set_protocol_version(1);
  EXPECT_THAT(std::string(DecodeError(Encode(hello, {})).message()),
              HasSubstr("hello: envelope says protocol version 2, hello says 1"));

  hello.set_protocol_version(1);
  message = Encode(hello, {});
  decoded = DecodeMessage(message.Frames());
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(CheckProtocolVersion(decoded->envelope).ok());
}

TEST(MessageCodecTest, RejectsNoBody) {
  wire::Envelope envelope;
  envelope.set_protocol_version(wire::PROTOCOL_VERSION);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()), HasSubstr("no body"));
  // An empty frame parses as an empty envelope: it has neither version nor body.
  WireMessage empty;
  EXPECT_FALSE(DecodeMessage(empty.Frames()).ok());
}

TEST(MessageCodecTest, RejectsWrongFrameCounts) {
  EXPECT_THAT(
      std::string(DecodeError(Encode(HiddenActivation(wire::ACTIVATION_F32, 1, 8), {})).message()),
      HasSubstr("activation: 0 raw frames, expected 1"));
  EXPECT_THAT(
      std::string(DecodeError(Encode(TokenActivation(1), {std::vector<uint8_t>(4)})).message()),
      HasSubstr("activation: 1 raw frames, expected 0"));
  EXPECT_THAT(std::string(DecodeError(Encode(Chunk(0, 8, false), {})).message()),
              HasSubstr("weight chunk: 0 raw frames, expected 1"));

  wire::Envelope logits;
  SetTensorFrame(wire::ACTIVATION_F32, 1, 4, StartLogits(&logits)->mutable_logits());
  EXPECT_THAT(
      std::string(DecodeError(Encode(logits, {std::vector<uint8_t>(16), std::vector<uint8_t>(16)}))
                      .message()),
      HasSubstr("logits: 2 raw frames, expected 1"));
  logits.mutable_logits()->clear_logits();
  EXPECT_THAT(std::string(DecodeError(Encode(logits, {std::vector<uint8_t>(16)})).message()),
              HasSubstr("logits: no logits tensor frame"));

  wire::Envelope heartbeat;
  heartbeat.set_protocol_version(wire::PROTOCOL_VERSION);
  heartbeat.mutable_heartbeat()->set_sent_at_us(1);
  EXPECT_THAT(std::string(DecodeError(Encode(heartbeat, {std::vector<uint8_t>(1)})).message()),
              HasSubstr("heartbeat: 1 raw frames, expected 0"));
}

TEST(MessageCodecTest, RejectsRawFrameOverTheLimit) {
  DecodeLimits limits;
  limits.max_tensor_bytes = 1024;
  const absl::Status status =
      DecodeError(Encode(Chunk(0, 4096, false), {std::vector<uint8_t>(2048)}), limits);
  EXPECT_EQ(DropReasonOf(status), DropReason::kOversized);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("frame 1 has 2048 bytes, the limit is 1024"));
}

// ---- Tensor frames ---------------------------------------------------------------------

TEST(MessageCodecTest, RejectsFrameSizeOtherThanTheHeaders) {
  // 4 rows of 256 floats: 4096 bytes.
  const absl::Status status = DecodeError(
      Encode(HiddenActivation(wire::ACTIVATION_F32, 4, 256), {std::vector<uint8_t>(100)}));
  EXPECT_EQ(status.message(), "activation: hidden frame has 100 bytes, header says 4096");

  wire::Envelope envelope = HiddenActivation(wire::ACTIVATION_F16, 4, 256);
  envelope.mutable_activation()->mutable_hidden()->set_bytes(4096);  // f32's size, not f16's
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {std::vector<uint8_t>(4096)})).message()),
              HasSubstr("header says 4096 bytes, but shape [4, 256] of f16 takes 2048"));
  envelope.mutable_activation()->mutable_hidden()->set_bytes(-2048);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {std::vector<uint8_t>(2048)})).message()),
              HasSubstr("header says -2048 bytes"));
}

TEST(MessageCodecTest, RejectsBadShapes) {
  auto error_for_shape = [](std::vector<int64_t> shape,
                            wire::ActivationType type = wire::ACTIVATION_F32) {
    wire::Envelope envelope = HiddenActivation(type, 1, 32);
    wire::TensorFrame* hidden = envelope.mutable_activation()->mutable_hidden();
    hidden->clear_shape();
    for (int64_t d : shape) hidden->add_shape(d);
    return DecodeError(Encode(envelope, {std::vector<uint8_t>(hidden->bytes())}));
  };
  EXPECT_THAT(std::string(error_for_shape({32}).message()), HasSubstr("shape has 1 dimensions"));
  EXPECT_THAT(std::string(error_for_shape({1, 1, 32}).message()),
              HasSubstr("shape has 3 dimensions"));
  EXPECT_THAT(std::string(error_for_shape({1, 0}).message()), HasSubstr("not positive"));
  EXPECT_THAT(std::string(error_for_shape({-1, 32}).message()), HasSubstr("not positive"));
  EXPECT_THAT(std::string(error_for_shape({1, 48}, wire::ACTIVATION_Q8_0).message()),
              HasSubstr("q8_0 rows of width 48 are not whole blocks of 32"));

  // Products that overflow 64 bits, or whose byte count does, are oversized, not wrapped.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{kMax, kMax},
                                         {int64_t{1} << 32, int64_t{1} << 32},
                                         {1, int64_t{1} << 62},
                                         {1, (int64_t{1} << 30) + 1}}) {
    const absl::Status status = error_for_shape(shape);
    EXPECT_EQ(DropReasonOf(status), DropReason::kOversized) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("exceeds the limit of 1073741824 bytes"));
  }
  // n_tokens must still match a legal shape's rows.
  wire::Envelope envelope = HiddenActivation(wire::ACTIVATION_F32, 2, 32);
  envelope.mutable_activation()->set_n_tokens(3);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {std::vector<uint8_t>(256)})).message()),
              HasSubstr("activation: hidden frame has 2 rows, n_tokens is 3"));
}

TEST(MessageCodecTest, RejectsUnknownActivationType) {
  wire::Envelope envelope = HiddenActivation(wire::ACTIVATION_F32, 1, 32);
  envelope.mutable_activation()->mutable_hidden()->set_type(static_cast<wire::ActivationType>(9));
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {std::vector<uint8_t>(128)})).message()),
              HasSubstr("unknown activation type 9"));

  wire::Envelope assign;
  assign.set_protocol_version(wire::PROTOCOL_VERSION);
  assign.mutable_assign()->set_activation_type(static_cast<wire::ActivationType>(3));
  EXPECT_THAT(std::string(DecodeError(Encode(assign, {})).message()),
              HasSubstr("assign: unknown activation type 3"));

  wire::Envelope hello;
  hello.set_protocol_version(wire::PROTOCOL_VERSION);
  hello.mutable_hello()->set_protocol_version(wire::PROTOCOL_VERSION);
  hello.mutable_hello()->mutable_budget()->set_backend(static_cast<wire::Backend>(-4));
  EXPECT_THAT(std::string(DecodeError(Encode(hello, {})).message()),
              HasSubstr("hello: unknown backend -4"));
}

TEST(MessageCodecTest, RejectsTensorOverTheLimit) {
  DecodeLimits limits;
  limits.max_tensor_bytes = 4096;
  // 4 x 256 f32 is exactly the limit; one more row is not.
  WireMessage fits =
      Encode(HiddenActivation(wire::ACTIVATION_F32, 4, 256), {std::vector<uint8_t>(4096)});
  EXPECT_TRUE(DecodeMessage(fits.Frames(), limits).ok());
  const absl::Status status = DecodeError(
      Encode(HiddenActivation(wire::ACTIVATION_F32, 5, 256), {std::vector<uint8_t>(4)}), limits);
  EXPECT_EQ(DropReasonOf(status), DropReason::kOversized);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("shape [5, 256] of f32 exceeds the limit of 4096"));
}

// ---- Activation fields -----------------------------------------------------------------

TEST(MessageCodecTest, RejectsBadTokenCounts) {
  EXPECT_THAT(std::string(DecodeError(Encode(TokenActivation(0), {})).message()),
              HasSubstr("n_tokens 0 is not positive"));

  DecodeLimits limits;
  limits.max_tokens = 4;
  const absl::Status status = DecodeError(Encode(TokenActivation(5), {}), limits);
  EXPECT_EQ(DropReasonOf(status), DropReason::kOversized);
  EXPECT_THAT(std::string(status.message()), HasSubstr("n_tokens 5 exceeds the limit of 4"));

  wire::Envelope envelope = TokenActivation(3);
  envelope.mutable_activation()->set_n_tokens(4);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()),
              HasSubstr("activation: 3 token ids and no hidden frame, n_tokens is 4"));

  envelope = HiddenActivation(wire::ACTIVATION_F32, 1, 32);
  envelope.mutable_activation()->add_tokens(1);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {std::vector<uint8_t>(128)})).message()),
              HasSubstr("has both 1 token ids and a hidden frame"));

  envelope = TokenActivation(2);
  envelope.mutable_activation()->set_tokens(1, -5);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()),
              HasSubstr("token 1 has negative id -5"));
}

TEST(MessageCodecTest, RejectsBadPositions) {
  wire::Envelope envelope = TokenActivation(2);
  envelope.mutable_activation()->set_pos0(-1);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()),
              HasSubstr("pos0 -1 is negative"));
  envelope.mutable_activation()->set_pos0(std::numeric_limits<int32_t>::max() - 1);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()), HasSubstr("overflow"));
  envelope.mutable_activation()->set_pos0(std::numeric_limits<int32_t>::max() - 2);
  WireMessage last_positions = Encode(envelope, {});
  EXPECT_TRUE(DecodeMessage(last_positions.Frames()).ok());
  envelope.mutable_activation()->set_from_stage(-2);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()), HasSubstr("from_stage -2"));
}

// ---- Weight chunks and load progress ---------------------------------------------------

TEST(MessageCodecTest, RejectsBadWeightChunks) {
  auto chunk_error = [](const wire::Envelope& envelope, size_t bytes) {
    return std::string(DecodeError(Encode(envelope, {std::vector<uint8_t>(bytes)})).message());
  };
  wire::Envelope envelope = Chunk(0, 64, false);
  envelope.mutable_weight_chunk()->clear_tensor();
  EXPECT_THAT(chunk_error(envelope, 8), HasSubstr("no tensor name"));
  EXPECT_THAT(chunk_error(Chunk(0, 0, false), 8), HasSubstr("has 0 bytes"));
  EXPECT_THAT(chunk_error(Chunk(-8, 64, false), 8), HasSubstr("offset -8 lies outside"));
  EXPECT_THAT(chunk_error(Chunk(64, 64, false), 8), HasSubstr("offset 64 lies outside"));
  EXPECT_THAT(chunk_error(Chunk(0, 64, false), 0), HasSubstr("empty chunk"));
  EXPECT_THAT(chunk_error(Chunk(60, 64, false), 8),
              HasSubstr("8 bytes at offset 60 overrun tensor blk.0.attn_q.weight of 64 bytes"));
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(chunk_error(Chunk(kMax - 4, kMax, false), 8), HasSubstr("overrun"));
  EXPECT_THAT(chunk_error(Chunk(0, 64, true), 8),
              HasSubstr("last chunk of blk.0.attn_q.weight ends at 8, the tensor has 64 bytes"));
  envelope = Chunk(56, 64, true);
  envelope.mutable_weight_chunk()->clear_tensor_sha256();
  EXPECT_THAT(chunk_error(envelope, 8), HasSubstr("has no tensor_sha256"));
  envelope.mutable_weight_chunk()->set_tensor_sha256("short");
  EXPECT_THAT(chunk_error(envelope, 8), HasSubstr("tensor_sha256 of blk.0.attn_q.weight has 5"));
}

TEST(MessageCodecTest, RejectsBadLoadProgress) {
  wire::Envelope envelope;
  envelope.set_protocol_version(wire::PROTOCOL_VERSION);
  envelope.mutable_load_progress()->set_bytes_done(200);
  envelope.mutable_load_progress()->set_bytes_total(100);
  EXPECT_THAT(std::string(DecodeError(Encode(envelope, {})).message()),
              HasSubstr("load progress: 200 of 100 bytes"));
}

// ---- Encoding helpers ------------------------------------------------------------------

TEST(MessageCodecTest, EncodeEnvelopeReusesItsBuffer) {
  std::string header;
  ASSERT_TRUE(EncodeEnvelope(TokenActivation(64), &header).ok());
  const char* data = header.data();
  const size_t capacity = header.capacity();
  ASSERT_TRUE(EncodeEnvelope(TokenActivation(2), &header).ok());
  EXPECT_EQ(header.data(), data);
  EXPECT_EQ(header.capacity(), capacity);
  wire::Envelope parsed;
  ASSERT_TRUE(parsed.ParseFromString(header));
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, TokenActivation(2)));
}

TEST(MessageCodecTest, StartBodyClearsAndKeepsTheBody) {
  wire::Envelope envelope = TokenActivation(8);
  const wire::Activation* before = &envelope.activation();
  wire::Activation* a = StartActivation(&envelope);
  EXPECT_EQ(a, before);  // the same object, with its allocations
  EXPECT_EQ(a->tokens_size(), 0);
  EXPECT_EQ(a->n_tokens(), 0);
  EXPECT_EQ(envelope.protocol_version(), static_cast<uint32_t>(wire::PROTOCOL_VERSION));

  wire::Logits* l = StartLogits(&envelope);
  EXPECT_TRUE(envelope.has_logits());
  EXPECT_FALSE(l->has_logits());
  StartWeightChunk(&envelope);
  EXPECT_TRUE(envelope.has_weight_chunk());
}

TEST(MessageCodecTest, SetTensorFrameDescribesTheEncoding) {
  wire::TensorFrame frame;
  SetTensorFrame(wire::ACTIVATION_Q8_0, 3, 64, &frame);
  EXPECT_EQ(frame.type(), wire::ACTIVATION_Q8_0);
  ASSERT_EQ(frame.shape_size(), 2);
  EXPECT_EQ(frame.shape(0), 3);
  EXPECT_EQ(frame.shape(1), 64);
  EXPECT_EQ(frame.bytes(), 3 * 2 * 34);
  SetTensorFrame(wire::ACTIVATION_F16, 2, 10, &frame);
  EXPECT_EQ(frame.shape_size(), 2);
  EXPECT_EQ(frame.bytes(), 40);
  EXPECT_EQ(EncodedActivationBytes(wire::ACTIVATION_F32, 2, 10), 80u);
}

// ---- Activation encodings --------------------------------------------------------------

TEST(ActivationEncodingTest, F32IsExact) {
  std::vector<float> x = RandomFloats(100, 3, 1e3f);
  x.push_back(std::numeric_limits<float>::denorm_min());
  x.push_back(-0.0f);
  x.push_back(std::numeric_limits<float>::infinity());
  const std::vector<uint8_t> bytes = Encoded(wire::ACTIVATION_F32, x);
  ASSERT_EQ(bytes.size(), x.size() * 4);
  std::vector<float> y(x.size());
  ASSERT_TRUE(DecodeActivations(wire::ACTIVATION_F32, bytes, y).ok());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * 4), 0);
}

TEST(ActivationEncodingTest, F16RoundsToNearestEven) {
  const std::vector<float> x = RandomFloats(4096, 4, 10.0f);
  const std::vector<uint8_t> bytes = Encoded(wire::ACTIVATION_F16, x);
  ASSERT_EQ(bytes.size(), x.size() * 2);
  std::vector<float> y(x.size());
  ASSERT_TRUE(DecodeActivations(wire::ACTIVATION_F16, bytes, y).ok());
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, bytes.data() + 2 * i, 2);
    EXPECT_EQ(h, F32ToF16(x[i])) << i;
    // Half of a unit in the last place of an 11-bit significand (all values here are normal
    // halves or tiny enough that the subnormal step 2^-25 bounds them).
    EXPECT_LE(std::fabs(y[i] - x[i]),
              std::max(std::fabs(x[i]) * std::ldexp(1.0f, -11), std::ldexp(1.0f, -25)))
        << x[i];
  }
  // Ties go to even: 1 + 2^-11 lies halfway between 1 and the next half.
  const float tie[] = {1.0f + std::ldexp(1.0f, -11)};
  float back[1];
  ASSERT_TRUE(
      DecodeActivations(wire::ACTIVATION_F16, Encoded(wire::ACTIVATION_F16, tie), back).ok());
  EXPECT_EQ(back[0], 1.0f);
}

TEST(ActivationEncodingTest, F16MatchesTheScalarConversionsBitForBit) {
  // Every half decodes as F16ToF32 does (NaN payloads included)...
  std::vector<uint8_t> halves(2 * 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t half = static_cast<uint16_t>(h);
    std::memcpy(&halves[2 * h], &half, 2);
  }
  std::vector<float> decoded(65536);
  ASSERT_TRUE(DecodeActivations(wire::ACTIVATION_F16, halves, decoded).ok());
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_EQ(std::bit_cast<uint32_t>(decoded[h]),
              std::bit_cast<uint32_t>(F16ToF32(static_cast<uint16_t>(h))))
        << std::hex << h;
  }
  // ... and floats spread over every exponent, sign, subnormals, the rounding boundaries and
  // NaN encode as F32ToF16 does.
  std::vector<float> x;
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 65521) {
    x.push_back(std::bit_cast<float>(static_cast<uint32_t>(bits)));
  }
  for (uint32_t bits : {0x477ff000u, 0x477fefffu, 0x38800000u, 0x387fffffu, 0x33000000u,
                        0x33000001u, 0x7f800000u, 0x7f800001u, 0xffc00000u, 0x80000000u}) {
    x.push_back(std::bit_cast<float>(bits));
  }
  const std::vector<uint8_t> encoded = Encoded(wire::ACTIVATION_F16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, &encoded[2 * i], 2);
    ASSERT_EQ(h, F32ToF16(x[i])) << std::hex << std::bit_cast<uint32_t>(x[i]);
  }
}

TEST(ActivationEncodingTest, Q8_0MatchesTheReferenceAndItsErrorBound) {
  const std::vector<float> x = RandomFloats(32 * 64, 5, 3.0f);
  const std::vector<uint8_t> bytes = Encoded(wire::ACTIVATION_Q8_0, x);
  ASSERT_EQ(bytes.size(), 64u * 34);
  std::vector<uint8_t> reference(bytes.size());
  QuantizeRow(TensorType::kQ8_0, x, reference.data());
  EXPECT_EQ(bytes, reference);

  std::vector<float> y(x.size());
  ASSERT_TRUE(DecodeActivations(wire::ACTIVATION_Q8_0, bytes, y).ok());
  std::vector<float> dequantized(x.size());
  DequantizeRow(TensorType::kQ8_0, reference.data(), dequantized);
  EXPECT_EQ(y, dequantized);
  for (size_t b = 0; b < x.size() / 32; ++b) {
    float amax = 0.0f;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    // Half a quantisation step (amax / 127 / 2) plus the scale's f16 rounding times 127.
    const float bound = amax * (1.0f / 254 + std::ldexp(1.0f, -11)) * 1.001f;
    for (size_t j = 0; j < 32; ++j) {
      EXPECT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), bound) << b << " " << j;
    }
  }
  // An all-zero block has scale 0 and decodes to zeros.
  const std::vector<float> zeros(32, 0.0f);
  std::vector<float> z(32, 1.0f);
  ASSERT_TRUE(
      DecodeActivations(wire::ACTIVATION_Q8_0, Encoded(wire::ACTIVATION_Q8_0, zeros), z).ok());
  EXPECT_EQ(z, zeros);
}

TEST(ActivationEncodingTest, WorksOnUnalignedBuffers) {
  // A transport's frames need not be aligned: encode to and decode from odd addresses.
  const std::vector<float> x = RandomFloats(64, 6);
  for (wire::ActivationType type :
       {wire::ACTIVATION_F32, wire::ACTIVATION_F16, wire::ACTIVATION_Q8_0}) {
    const size_t bytes = EncodedActivationBytes(type, 1, x.size());
    std::vector<uint8_t> buffer(bytes + 1);
    EncodeActivations(type, x, buffer.data() + 1);
    std::vector<float> y(x.size());
    ASSERT_TRUE(
        DecodeActivations(type, std::span<const uint8_t>(buffer.data() + 1, bytes), y).ok());
    EXPECT_EQ(std::vector<uint8_t>(buffer.begin() + 1, buffer.end()), Encoded(type, x));
  }
}

TEST(ActivationEncodingTest, DecodeRejectsWrongSizes) {
  std::vector<float> out(32);
  const std::vector<uint8_t> bytes(100);
  EXPECT_THAT(std::string(DecodeActivations(wire::ACTIVATION_F32, bytes, out).message()),
              HasSubstr("100 bytes for 32 f32 values, expected 128"));
  EXPECT_FALSE(DecodeActivations(wire::ACTIVATION_F16, bytes, out).ok());
  EXPECT_FALSE(DecodeActivations(wire::ACTIVATION_Q8_0, bytes, out).ok());
  std::vector<float> odd(33);
  EXPECT_THAT(std::string(DecodeActivations(wire::ACTIVATION_Q8_0, bytes, odd).message()),
              HasSubstr("not whole blocks"));
  EXPECT_THAT(
      std::string(DecodeActivations(static_cast<wire::ActivationType>(7), bytes, out).message()),
      HasSubstr("unknown type 7"));
}

// ---- Drop accounting -------------------------------------------------------------------

TEST(MessageStatsTest, CountsByReason) {
  MessageStats stats;
  stats.Count(absl::OkStatus());
  stats.Count(absl::OkStatus());
  const Frame garbage_frame{reinterpret_cast<const uint8_t*>("\xff\xff\xff"), 3};
  stats.Count(DecodeMessage({&garbage_frame, 1}).status());
  DecodeLimits limits;
  limits.max_tokens = 1;
  WireMessage big = Encode(TokenActivation(2), {});
  stats.Count(DecodeMessage(big.Frames(), limits).status());
  stats.Count(UnexpectedMessage("activation for unknown sequence 7"));
  stats.Count(absl::NotFoundError("no such plan"));
  EXPECT_EQ(stats.received, 6u);
  EXPECT_EQ(stats.dropped_malformed, 1u);
  EXPECT_EQ(stats.dropped_oversized, 1u);
  EXPECT_EQ(stats.dropped_unexpected, 2u);
  EXPECT_EQ(stats.dropped(), 4u);
  EXPECT_EQ(stats.ToString(), "received 6, dropped 4 (malformed 1, oversized 1, unexpected 2)");
}

}  // namespace
}  // namespace shardrun
