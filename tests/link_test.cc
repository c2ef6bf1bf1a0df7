// proto/link.h: a channel taking messages from its links and its socket alike, a sender trying
// an inbox's ways in in order (shared memory, then TCP), and the addresses that name them.
#include "proto/link.h"

#include <chrono>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "proto/channel.h"

namespace shardrun {
namespace {

// Sends 20 activations from `out` to `in` and checks each arrives whole; returns how the last
// one came.
LinkKind SendActivations(Channel& out, Channel& in) {
  wire::Envelope envelope;
  wire::Activation* a = StartActivation(&envelope);
  a->set_sequence_id(9);
  a->set_n_tokens(1);
  SetTensorFrame(wire::ACTIVATION_F32, 1, 64, a->mutable_hidden());
  std::vector<float> hidden(64);
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = 0.5f * static_cast<float>(i);
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(hidden.data()),
                                       hidden.size() * sizeof(float));
  // The first messages go by socket (the link is not up yet); later ones by the link once the
  // receiving channel has served its inbox.
  for (int step = 1; step <= 20; ++step) {
    a->set_step(static_cast<uint64_t>(step));
    EXPECT_TRUE(out.Send(envelope, {&bytes, 1}).ok());
    EXPECT_TRUE(in.Receive(std::chrono::milliseconds(5000))) << "step " << step;
    EXPECT_EQ(in.envelope().activation().step(), static_cast<uint64_t>(step));
    EXPECT_EQ(in.tensors().size(), 1u);
    if (in.tensors().size() == 1) {
      EXPECT_EQ(std::memcmp(in.tensors()[0].data(), hidden.data(), bytes.size()), 0);
    }
  }
  EXPECT_EQ(in.stats().dropped(), 0u);
  return in.last_link();
}

class ChannelLinkTest : public ::testing::TestWithParam<LinkMode> {};

TEST_P(ChannelLinkTest, TakesMessagesFromItsLinkAndItsSocket) {
  zmq::context_t context;
  Channel in(context, zmq::socket_type::pull, "in");
  in.socket().bind("tcp://127.0.0.1:0");
  in.OpenInbox(GetParam(), "127.0.0.1");
  ASSERT_NE(in.inbox(), nullptr);
  Channel out(context, zmq::socket_type::push, "out");
  out.ConnectOnFirstSend(in.socket().get(zmq::sockopt::last_endpoint));
  out.LinkTo(in.inbox()->address(), GetParam());
  const LinkKind last = SendActivations(out, in);
  EXPECT_EQ(last, GetParam() == LinkMode::kTcp ? LinkKind::kTcp : LinkKind::kSharedMemory);
  EXPECT_EQ(out.outlet()->kind(), last);
  EXPECT_EQ(in.inbox()->senders(), 1);
}

INSTANTIATE_TEST_SUITE_P(Modes, ChannelLinkTest, ::testing::Values(LinkMode::kAuto, LinkMode::kTcp),
                         [](const auto& info) { return std::string(LinkModeName(info.param)); });

TEST(LinkTest, AnInboxOffersSharedMemoryThenTcp) {
  auto inbox = LinkInbox::Open(LinkMode::kAuto, "127.0.0.1");
  ASSERT_TRUE(inbox.ok()) << inbox.status();
  const std::string address = (*inbox)->address();
  EXPECT_EQ(address.rfind("local:", 0), 0u) << address;
  EXPECT_NE(address.find(",tcp:127.0.0.1:"), std::string::npos) << address;
  auto tcp_only = LinkInbox::Open(LinkMode::kTcp, "127.0.0.1");
  ASSERT_TRUE(tcp_only.ok());
  EXPECT_EQ((*tcp_only)->address().rfind("tcp:127.0.0.1:", 0), 0u);
  auto shm_only = LinkInbox::Open(LinkMode::kAuto, "");
  ASSERT_TRUE(shm_only.ok());
  EXPECT_EQ((*shm_only)->address().find("tcp:"), std::string::npos);
  EXPECT_FALSE(LinkInbox::Open(LinkMode::kNone, "127.0.0.1").ok());
  EXPECT_FALSE(LinkInbox::Open(LinkMode::kTcp, "").ok());  // nothing to offer
}

// A shared-memory name that does not exist here (as on another host, or in another network
// namespace) is passed over for the TCP way in.
TEST(LinkTest, ASenderThatCannotReachTheSharedMemoryUsesTcp) {
  zmq::context_t context;
  Channel in(context, zmq::socket_type::pull, "in");
  in.socket().bind("tcp://127.0.0.1:0");
  in.OpenInbox(LinkMode::kTcp, "127.0.0.1");
  ASSERT_NE(in.inbox(), nullptr);
  Channel out(context, zmq::socket_type::push, "out");
  out.ConnectOnFirstSend(in.socket().get(zmq::sockopt::last_endpoint));
  out.LinkTo("local:shardrun-nobody-listens-here," + in.inbox()->address(), LinkMode::kAuto);
  EXPECT_EQ(SendActivations(out, in), LinkKind::kTcp);
}

TEST(LinkTest, AddressesAndModes) {
  EXPECT_EQ(*ParseLinkMode("auto"), LinkMode::kAuto);
  EXPECT_EQ(*ParseLinkMode("tcp"), LinkMode::kTcp);
  EXPECT_EQ(*ParseLinkMode("none"), LinkMode::kNone);
  EXPECT_FALSE(ParseLinkMode("shm").ok());
  EXPECT_EQ(EndpointHost("tcp://10.0.0.7:5555"), "10.0.0.7");
  EXPECT_EQ(EndpointHost("tcp://[fd00::7]:5555"), "fd00::7");
  EXPECT_EQ(LinkAddressFor("local:x,tcp:*:4000", "head"), "local:x,tcp:head:4000");
  EXPECT_EQ(LinkAddressFor("tcp:*:4000", "fd00::7"), "tcp:[fd00::7]:4000");
  EXPECT_EQ(LinkAddressFor("tcp:10.0.0.1:4000", "head"), "tcp:10.0.0.1:4000");
  EXPECT_FALSE(LinkOutlet::Connect("").ok());
  EXPECT_FALSE(LinkOutlet::Connect("ipc://x").ok());
  EXPECT_FALSE(LinkOutlet::Connect("local:x", LinkMode::kTcp).ok());  // only shared memory
  EXPECT_TRUE(LinkOutlet::Connect("local:x,tcp:127.0.0.1:1", LinkMode::kTcp).ok());
}

}  // namespace
}  // namespace shardrun
