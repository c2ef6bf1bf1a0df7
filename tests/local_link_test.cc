// The same-host link of proto/local_link.h: messages through its ring in order (across the
// ring's end), the fallbacks (too big, full, no inbox, receiver gone), the doorbell that wakes
// a sleeping receiver, and a ring written by a hostile sender.
#include "proto/local_link.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace shardrun {
namespace {

// Serves the inbox once without sleeping (accepts a sender that connected, reads doorbells).
void Serve(LocalInbox& inbox) {
  std::vector<zmq::pollitem_t> items;
  inbox.AppendPollItems(&items);
  zmq::poll(items, std::chrono::milliseconds(0));
  inbox.Service(items);
}

// Connects an outlet and serves the inbox until the ring has reached it.
std::unique_ptr<LocalOutlet> Connected(LocalInbox& inbox) {
  auto outlet = LocalOutlet::Connect(inbox.address());
  EXPECT_TRUE(outlet.ok()) << outlet.status();
  const uint8_t probe = 0;
  const Frame none{&probe, 0};
  // TrySend of an empty message list fails but takes the ring once it is there.
  for (int i = 0; i < 1000 && !(*outlet)->up(); ++i) {
    Serve(inbox);
    (*outlet)->TrySend({&none, 0});
  }
  EXPECT_TRUE((*outlet)->up());
  return *std::move(outlet);
}

std::vector<uint8_t> Pattern(size_t size, int seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  return bytes;
}

TEST(LocalLinkTest, DeliversMessagesInOrderAcrossTheRingsEnd) {
  auto inbox = LocalInbox::Create(64 << 10);
  ASSERT_TRUE(inbox.ok()) << inbox.status();
  std::unique_ptr<LocalOutlet> outlet = Connected(**inbox);
  EXPECT_EQ((*inbox)->senders(), 1);
  std::vector<Frame> got;
  absl::Status broken;
  int received = 0;
  // 400 messages of 1..20000 bytes in two frames, up to three in the ring at once: the ring of
  // 64 KiB is wrapped many times, at every offset.
  for (int sent = 0; sent < 402; ++sent) {
    const std::vector<uint8_t> a = Pattern(static_cast<size_t>(1 + (sent * 7919) % 20000), sent);
    const std::vector<uint8_t> b = Pattern(static_cast<size_t>(sent % 3), -sent);
    const Frame frames[] = {{a.data(), a.size()}, {b.data(), b.size()}};
    ASSERT_TRUE(outlet->TrySend(frames)) << "message " << sent;
    if (sent % 3 != 2) continue;
    for (; received <= sent; ++received) {
      ASSERT_TRUE((*inbox)->Next(&got, &broken)) << "message " << received;
      ASSERT_EQ(got.size(), 2u);
      const std::vector<uint8_t> want_a =
          Pattern(static_cast<size_t>(1 + (received * 7919) % 20000), received);
      const std::vector<uint8_t> want_b = Pattern(static_cast<size_t>(received % 3), -received);
      ASSERT_EQ(std::vector<uint8_t>(got[0].data, got[0].data + got[0].size), want_a);
      ASSERT_EQ(std::vector<uint8_t>(got[1].data, got[1].data + got[1].size), want_b);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(got[0].data) % 16, 0u);  // aligned for SIMD
    }
  }
  EXPECT_FALSE((*inbox)->Next(&got, &broken));
  EXPECT_TRUE(broken.ok());
}

TEST(LocalLinkTest, ATooBigMessageOrAFullRingGoesBySocket) {
  auto inbox = LocalInbox::Create(64 << 10);
  ASSERT_TRUE(inbox.ok());
  std::unique_ptr<LocalOutlet> outlet = Connected(**inbox);
  const std::vector<uint8_t> big(40 << 10), small(10 << 10);
  const Frame too_big{big.data(), big.size()};
  EXPECT_FALSE(outlet->TrySend({&too_big, 1}));  // more than half the ring
  const Frame fits{small.data(), small.size()};
  int queued = 0;
  while (outlet->TrySend({&fits, 1})) ++queued;
  EXPECT_GE(queued, 5);  // 64 KiB of 10 KiB messages (and their headers)
  EXPECT_LE(queued, 6);
  std::vector<Frame> got;
  absl::Status broken;
  ASSERT_TRUE((*inbox)->Next(&got, &broken));
  // The message just handed out is held until the next call: no room yet.
  EXPECT_FALSE(outlet->TrySend({&fits, 1}));
  ASSERT_TRUE((*inbox)->Next(&got, &broken));
  EXPECT_TRUE(outlet->TrySend({&fits, 1}));
}

TEST(LocalLinkTest, ASleepingReceiverIsWokenByTheDoorbell) {
  auto inbox = LocalInbox::Create();
  ASSERT_TRUE(inbox.ok());
  std::unique_ptr<LocalOutlet> outlet = Connected(**inbox);
  ASSERT_TRUE((*inbox)->PrepareToSleep());  // nothing waits: it may sleep
  const std::vector<uint8_t> message = Pattern(100, 1);
  std::thread sender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const Frame frame{message.data(), message.size()};
    EXPECT_TRUE(outlet->TrySend({&frame, 1}));
  });
  std::vector<zmq::pollitem_t> items;
  (*inbox)->AppendPollItems(&items);
  const auto start = std::chrono::steady_clock::now();
  // Without the doorbell this would sleep the whole 10 s.
  EXPECT_EQ(zmq::poll(items, std::chrono::milliseconds(10'000)), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  (*inbox)->Awake();
  (*inbox)->Service(items);
  sender.join();
  std::vector<Frame> got;
  absl::Status broken;
  ASSERT_TRUE((*inbox)->Next(&got, &broken));
  EXPECT_EQ(got[0].size, 100u);
  // A message already waiting: do not sleep.
  const Frame frame{message.data(), message.size()};
  ASSERT_TRUE(outlet->TrySend({&frame, 1}));
  EXPECT_FALSE((*inbox)->PrepareToSleep());
}

TEST(LocalLinkTest, ASenderThatLeavesIsDroppedAfterItsLastMessage) {
  auto inbox = LocalInbox::Create();
  ASSERT_TRUE(inbox.ok());
  std::unique_ptr<LocalOutlet> outlet = Connected(**inbox);
  const std::vector<uint8_t> message = Pattern(5000, 2);
  const Frame frame{message.data(), message.size()};
  ASSERT_TRUE(outlet->TrySend({&frame, 1}));
  ASSERT_TRUE(outlet->TrySend({&frame, 1}));
  outlet.reset();
  Serve(**inbox);  // sees the connection close
  std::vector<Frame> got;
  absl::Status broken;
  EXPECT_TRUE((*inbox)->Next(&got, &broken));
  EXPECT_TRUE((*inbox)->Next(&got, &broken));
  EXPECT_FALSE((*inbox)->Next(&got, &broken));
  Serve(**inbox);
  EXPECT_EQ((*inbox)->senders(), 0);
}

TEST(LocalLinkTest, WithoutAReceiverTheOutletStepsAside) {
  // An inbox on another host (or gone): no error, every message by socket.
  auto nowhere = LocalOutlet::Connect("local:shardrun-no-such-inbox");
  ASSERT_TRUE(nowhere.ok());
  const uint8_t byte = 1;
  const Frame frame{&byte, 1};
  EXPECT_FALSE((*nowhere)->TrySend({&frame, 1}));
  EXPECT_FALSE((*nowhere)->up());
  EXPECT_FALSE(LocalOutlet::Connect("tcp://127.0.0.1:5555").ok());
  // A receiver that closes after the link was made.
  auto inbox = LocalInbox::Create();
  ASSERT_TRUE(inbox.ok());
  std::unique_ptr<LocalOutlet> outlet = Connected(**inbox);
  EXPECT_TRUE(outlet->TrySend({&frame, 1}));
  inbox->reset();
  EXPECT_FALSE(outlet->TrySend({&frame, 1}));
  EXPECT_FALSE(outlet->up());
}

// A receiver killed outright (no destructor runs): the next message goes by socket, so that
// the sender's socket can report the peer gone instead of the ring swallowing it.
TEST(LocalLinkTest, AReceiverKilledOutrightMakesTheOutletStepAside) {
  int to_parent[2], to_child[2];
  ASSERT_EQ(pipe(to_parent), 0);
  ASSERT_EQ(pipe(to_child), 0);
  const pid_t child = fork();
  if (child == 0) {
    auto inbox = LocalInbox::Create();
    if (!inbox.ok()) _exit(1);
    const std::string address = (*inbox)->address();
    if (write(to_parent[1], address.data(), address.size()) < 0) _exit(1);
    while ((*inbox)->senders() == 0) Serve(**inbox);
    char go;
    if (read(to_child[0], &go, 1) != 1) _exit(1);
    _exit(0);  // like SIGKILL: the inbox is never destroyed
  }
  char buffer[128] = {};
  ASSERT_GT(read(to_parent[0], buffer, sizeof(buffer) - 1), 0);
  auto outlet = LocalOutlet::Connect(buffer);
  ASSERT_TRUE(outlet.ok());
  const uint8_t byte = 1;
  const Frame frame{&byte, 1};
  bool sent = false;
  for (int i = 0; i < 100000 && !sent; ++i) sent = (*outlet)->TrySend({&frame, 1});
  ASSERT_TRUE(sent);
  EXPECT_FALSE((*outlet)->ReceiverGone());
  ASSERT_EQ(write(to_child[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE((*outlet)->ReceiverGone());  // what a tensor group's survivor asks
  EXPECT_FALSE((*outlet)->TrySend({&frame, 1}));
  EXPECT_FALSE((*outlet)->up());
  for (int fd : {to_parent[0], to_parent[1], to_child[0], to_child[1]}) close(fd);
}

// A hostile sender of the same user: takes the ring by hand and writes garbage records. The
// inbox must never hand out a frame outside the ring (the sanitizer build checks the reads)
// and must drop the ring once its format breaks.
TEST(LocalLinkTest, AGarbledRingIsDroppedNeverReadOutOfBounds) {
  constexpr size_t kRing = 64 << 10;
  // The layout in local_link.cc: head at byte 64, tail at 128, data from byte 256.
  constexpr size_t kHead = 64, kData = 256;
  std::mt19937_64 random(7);
  int dropped = 0;
  for (int trial = 0; trial < 200; ++trial) {
    auto inbox = LocalInbox::Create(kRing);
    ASSERT_TRUE(inbox.ok());
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string name = (*inbox)->address().substr(6);
    std::memcpy(address.sun_path + 1, name.data(), name.size());
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address),
                      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())),
              0);
    Serve(**inbox);
    char byte;
    iovec payload{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &payload;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    ASSERT_EQ(recvmsg(fd, &message, 0), 1);
    int memfd;
    std::memcpy(&memfd, CMSG_DATA(CMSG_FIRSTHDR(&message)), sizeof(int));
    auto* ring = static_cast<uint8_t*>(
        mmap(nullptr, kData + kRing, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0));
    ASSERT_NE(ring, MAP_FAILED);
    // Random records, sometimes with plausible sizes, and a random amount "written".
    for (size_t i = 0; i < kRing; i += 8) {
      uint64_t word = random();
      if (random() % 2) word = (random() % 512) * 16 | (uint64_t{random() % 4} << 32);
      std::memcpy(ring + kData + i, &word, sizeof(word));
    }
    const uint64_t head = random() % 3 == 0 ? random() : random() % kRing;
    std::memcpy(ring + kHead, &head, sizeof(head));
    std::vector<Frame> got;
    absl::Status broken;
    for (int n = 0; n < 100; ++n) {
      if (!(*inbox)->Next(&got, &broken)) break;
      for (const Frame& f : got) {
        ASSERT_LE(f.size, kRing);
        volatile uint8_t sum = 0;
        for (size_t k = 0; k < f.size; ++k) sum = sum + f.data[k];  // reads every byte
      }
    }
    if (!broken.ok()) {
      ++dropped;
      EXPECT_NE(std::string(broken.message()).find("ring dropped"), std::string::npos);
      EXPECT_EQ((*inbox)->senders(), 0);
    }
    munmap(ring, kData + kRing);
    close(memfd);
    close(fd);
  }
  EXPECT_GT(dropped, 100);  // most garbage is caught (the rest: frames within the ring)
}

}  // namespace
}  // namespace shardrun
