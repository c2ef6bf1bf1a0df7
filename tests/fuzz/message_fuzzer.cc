// libFuzzer target: DecodeMessage on arbitrary multipart messages.
//
// An input is split into 1..4 frames: byte 0 gives the count (1 + byte % 4), then one 16-bit
// little-endian length per frame but the last, which takes the rest (lengths are clipped to
// what is left). Each frame is copied into a buffer of its own size, so that ASan catches a
// read past any frame, not only past the whole input. Besides crashes and sanitizer reports
// it checks what must hold for every accepted message: each raw frame has the size its header
// declares and decodes as activations, and the envelope re-encoded decodes again.
//
// With SHARDRUN_MESSAGE_SEEDS=DIR in the environment the binary instead writes its seed corpus
// (one valid message of each kind, in the input format above) into DIR and exits; the ctest
// in tests/fuzz/CMakeLists.txt does that before fuzzing.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "proto/message_codec.h"

namespace shardrun {
namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "message_fuzzer: %s\n", what);
  std::abort();
}

// Splits an input into frames as the header comment describes, each in a buffer of its own.
std::vector<std::vector<uint8_t>> SplitFrames(const uint8_t* data, size_t size) {
  std::vector<std::vector<uint8_t>> buffers;
  if (size == 0) {
    buffers.emplace_back();
    return buffers;
  }
  const size_t count = 1 + data[0] % 4;
  size_t pos = 1;
  std::vector<size_t> lengths;
  for (size_t i = 0; i + 1 < count; ++i) {
    size_t length = 0;
    if (pos + 2 <= size) length = data[pos] | size_t{data[pos + 1]} << 8;
    pos = std::min(size, pos + 2);
    lengths.push_back(length);
  }
  for (size_t length : lengths) {
    length = std::min(length, size - pos);
    buffers.emplace_back(data + pos, data + pos + length);
    pos += length;
  }
  buffers.emplace_back(data + pos, data + size);
  return buffers;
}

// An accepted message's tensors must be what their headers say.
void CheckAccepted(const DecodedMessage& message) {
  const wire::Envelope& envelope = message.envelope;
  const wire::TensorFrame* header = nullptr;
  if (envelope.has_activation() && envelope.activation().has_hidden()) {
    header = &envelope.activation().hidden();
  } else if (envelope.has_logits()) {
    header = &envelope.logits().logits();
  }
  if (header != nullptr) {
    if (message.tensors.size() != 1) Fail("tensor frame count");
    const size_t rows = static_cast<size_t>(header->shape(0));
    const size_t width = static_cast<size_t>(header->shape(1));
    if (EncodedActivationBytes(header->type(), rows, width) != message.tensors[0].size()) {
      Fail("tensor frame size");
    }
    std::vector<float> values(rows * width);
    if (!DecodeActivations(header->type(), message.tensors[0], values).ok()) {
      Fail("accepted tensor does not decode");
    }
  }
  volatile uint8_t sink = 0;
  for (std::span<const uint8_t> t : message.tensors) {
    if (!t.empty()) sink = sink ^ t.front() ^ t.back();
  }

  // Re-encoding only makes an envelope canonical (never larger), so it must decode again.
  std::string header_bytes;
  if (!EncodeEnvelope(envelope, &header_bytes, size_t{1} << 30).ok()) Fail("re-encode");
  std::vector<Frame> frames;
  MakeFrames(header_bytes, message.tensors, &frames);
  DecodeLimits limits;
  limits.max_header_bytes = size_t{1} << 30;
  if (!DecodeMessage(frames, limits).ok()) Fail("re-encoded message does not decode");
}

void Decode(std::span<const Frame> frames, const DecodeLimits& limits) {
  absl::StatusOr<DecodedMessage> message = DecodeMessage(frames, limits);
  MessageStats stats;
  stats.Count(message.status());
  if (message.ok()) CheckAccepted(*message);
}

// ---- Seeds -----------------------------------------------------------------------------

std::string Serialize(const std::vector<std::string>& frames) {
  std::string input(1, static_cast<char>(frames.size() - 1));
  for (size_t i = 0; i + 1 < frames.size(); ++i) {
    input.push_back(static_cast<char>(frames[i].size() & 0xff));
    input.push_back(static_cast<char>(frames[i].size() >> 8));
  }
  for (const std::string& f : frames) input += f;
  return input;
}

std::string Header(const wire::Envelope& envelope) {
  std::string header;
  if (!EncodeEnvelope(envelope, &header).ok()) Fail("seed envelope");
  return header;
}

std::string Values(wire::ActivationType type, size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 7) - 3.0f;
  std::string bytes(EncodedActivationBytes(type, 1, n), '\0');
  EncodeActivations(type, x, reinterpret_cast<uint8_t*>(bytes.data()));
  return bytes;
}

std::vector<std::pair<std::string, std::string>> Seeds() {
  std::vector<std::pair<std::string, std::string>> seeds;
  wire::Envelope e;

  wire::Activation* a = StartActivation(&e);
  a->set_sequence_id(1);
  a->set_pos0(3);
  a->set_n_tokens(2);
  a->add_tokens(5);
  a->add_tokens(9);
  seeds.emplace_back("activation_tokens", Serialize({Header(e)}));

  const std::pair<const char*, wire::ActivationType> types[] = {
      {"activation_f32", wire::ACTIVATION_F32},
      {"activation_f16", wire::ACTIVATION_F16},
      {"activation_q8_0", wire::ACTIVATION_Q8_0}};
  for (const auto& [name, type] : types) {
    a = StartActivation(&e);
    a->set_sequence_id(1);
    a->set_step(2);
    a->set_pos0(4);
    a->set_n_tokens(2);
    a->set_from_stage(1);
    SetTensorFrame(type, 2, 32, a->mutable_hidden());
    seeds.emplace_back(name, Serialize({Header(e), Values(type, 64)}));
  }

  wire::Logits* l = StartLogits(&e);
  l->set_sequence_id(1);
  SetTensorFrame(wire::ACTIVATION_F32, 1, 64, l->mutable_logits());
  l->add_timings()->set_compute_us(10);
  seeds.emplace_back("logits", Serialize({Header(e), Values(wire::ACTIVATION_F32, 64)}));

  wire::WeightChunk* c = StartWeightChunk(&e);
  c->set_tensor("output.weight");
  c->set_offset(16);
  c->set_tensor_bytes(48);
  c->set_last(true);
  c->set_tensor_sha256(std::string(32, 'h'));
  seeds.emplace_back("weight_chunk", Serialize({Header(e), std::string(32, 'w')}));

  e.Clear();
  e.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Hello* h = e.mutable_hello();
  h->set_protocol_version(wire::PROTOCOL_VERSION);
  h->set_worker_id("w1");
  h->mutable_budget()->set_memory_bytes(1 << 30);
  h->mutable_capabilities()->set_simd_level("avx2");
  seeds.emplace_back("hello", Serialize({Header(e)}));

  e.Clear();
  e.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Assign* as = e.mutable_assign();
  as->set_stage(1);
  as->mutable_slice()->set_layer_end(4);
  as->add_experts()->set_expert(2);
  as->set_activation_type(wire::ACTIVATION_F16);
  seeds.emplace_back("assign", Serialize({Header(e)}));
  return seeds;
}

void WriteSeeds(const char* dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) Fail(("cannot create " + std::string(dir)).c_str());
  for (const auto& [name, input] : Seeds()) {
    // A seed that the decoder refuses would only seed the error paths.
    const auto* bytes = reinterpret_cast<const uint8_t*>(input.data());
    const std::vector<std::vector<uint8_t>> buffers = SplitFrames(bytes, input.size());
    std::vector<Frame> frames;
    for (const std::vector<uint8_t>& b : buffers) frames.push_back({b.data(), b.size()});
    if (absl::Status status = DecodeMessage(frames).status(); !status.ok()) {
      Fail(("seed " + name + ": " + std::string(status.message())).c_str());
    }
    const std::string path = std::string(dir) + "/" + name;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(input.data(), 1, input.size(), f) != input.size() ||
        std::fclose(f) != 0) {
      Fail(("cannot write " + path).c_str());
    }
  }
}

}  // namespace
}  // namespace shardrun

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("SHARDRUN_MESSAGE_SEEDS"); dir != nullptr) {
    shardrun::WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<std::vector<uint8_t>> buffers = shardrun::SplitFrames(data, size);
  std::vector<shardrun::Frame> frames;
  for (const std::vector<uint8_t>& b : buffers) frames.push_back({b.data(), b.size()});
  shardrun::Decode(frames, shardrun::DecodeLimits{});
  // Small limits reach the oversized paths with small inputs.
  shardrun::DecodeLimits small;
  small.max_header_bytes = 256;
  small.max_tensor_bytes = 512;
  small.max_tokens = 4;
  shardrun::Decode(frames, small);
  return 0;
}
