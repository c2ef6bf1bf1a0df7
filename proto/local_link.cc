#include "proto/local_link.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "proto/link_record.h"
#include "proto/peer_closed.h"
#include "spdlog/spdlog.h"

namespace shardrun {

// The ring both processes map. Positions count bytes written and consumed since the start (they
// never wrap; the offset in `data` is the position modulo the capacity). Only the sender
// writes `head` and the records, only the receiver writes `tail`, `receiver_sleeping` and
// `receiver_closed`; each on its own cache line.
struct LocalRing {
  static constexpr uint64_t kMagic = 0x6b6e696c64726873;  // "shrdlink"
  uint64_t magic;
  uint64_t capacity;  // bytes of data, a multiple of kLinkAlign
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
  alignas(64) std::atomic<uint32_t> receiver_sleeping;
  std::atomic<uint32_t> receiver_closed;

  uint8_t* data() { return reinterpret_cast<uint8_t*>(this) + kDataOffset; }
  static constexpr size_t kDataOffset = 256;
};
static_assert(sizeof(LocalRing) <= LocalRing::kDataOffset);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

namespace {

// Records as proto/link_record.h lays them out. A count of kSkip marks the unused end of the
// ring before a record that did not fit there.
constexpr uint32_t kSkip = 0xffffffff;

// "local:<name>" -> the abstract socket address "\0<name>".
absl::StatusOr<sockaddr_un> AbstractAddress(const std::string& address, socklen_t* length) {
  constexpr std::string_view kPrefix = "local:";
  if (address.rfind(kPrefix, 0) != 0 || address.size() == kPrefix.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a local link address (local:<name>): ", address));
  }
  const std::string name = address.substr(kPrefix.size());
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (name.size() + 1 > sizeof(a.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("local link name too long: ", name));
  }
  std::memcpy(a.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
  *length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

std::string Errno(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

// How a ring's descriptor travels: one byte of payload with room beside it for one file
// descriptor (SCM_RIGHTS).
struct RingHandover {
  char byte = 'R';
  iovec payload{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};

  RingHandover() {
    message.msg_iov = &payload;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
  }
  RingHandover(const RingHandover&) = delete;
  RingHandover& operator=(const RingHandover&) = delete;
};

}  // namespace

// ---- Receiver ---------------------------------------------------------------------------

struct LocalInbox::Link {
  int fd = -1;
  LocalRing* ring = nullptr;
  size_t mapped = 0;
  uint64_t tail = 0;  // our copy of ring->tail
  bool sender_gone = false;

  ~Link() {
    if (ring != nullptr) {
      ring->receiver_closed.store(1, std::memory_order_release);
      munmap(ring, mapped);
    }
    if (fd >= 0) close(fd);
  }
};

LocalInbox::LocalInbox(size_t ring_bytes) : ring_bytes_(ring_bytes) {}

absl::StatusOr<std::unique_ptr<LocalInbox>> LocalInbox::Create(size_t ring_bytes) {
  if (ring_bytes < 4096 || ring_bytes > (size_t{1} << 30) || ring_bytes % kLinkAlign != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad local ring size ", ring_bytes));
  }
  std::unique_ptr<LocalInbox> inbox(new LocalInbox(ring_bytes));
  std::random_device random;
  const uint64_t nonce = (uint64_t{random()} << 32) ^ random();
  inbox->address_ = absl::StrFormat("local:shardrun-%d-%016x", getpid(), nonce);
  socklen_t length = 0;
  absl::StatusOr<sockaddr_un> address = AbstractAddress(inbox->address_, &length);
  if (!address.ok()) return address.status();
  inbox->listen_fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (inbox->listen_fd_ < 0) return absl::UnavailableError(Errno("local link socket"));
  if (bind(inbox->listen_fd_, reinterpret_cast<const sockaddr*>(&*address), length) != 0 ||
      listen(inbox->listen_fd_, 16) != 0) {
    return absl::UnavailableError(Errno("local link listen"));
  }
  return inbox;
}

LocalInbox::~LocalInbox() {
  links_.clear();
  if (listen_fd_ >= 0) close(listen_fd_);
}

void LocalInbox::AppendPollItems(std::vector<zmq::pollitem_t>* items) const {
  items->push_back({nullptr, listen_fd_, ZMQ_POLLIN, 0});
  for (const std::unique_ptr<Link>& link : links_) {
    items->push_back({nullptr, link->fd, ZMQ_POLLIN, 0});
  }
}

void LocalInbox::Accept() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: no one else waits
    auto link = std::make_unique<Link>();
    link->fd = fd;
    ucred peer{};
    socklen_t size = sizeof(peer);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 || peer.uid != getuid()) {
      spdlog::warn("local link {}: refused a sender of user id {} (ours: {})", address_, peer.uid,
                   getuid());
      continue;  // ~Link closes it
    }
    const size_t bytes = LocalRing::kDataOffset + ring_bytes_;
    const int memfd = memfd_create("shardrun-link", MFD_CLOEXEC);
    void* memory = MAP_FAILED;
    if (memfd >= 0 && ftruncate(memfd, static_cast<off_t>(bytes)) == 0) {
      memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
    }
    if (memory == MAP_FAILED) {
      spdlog::warn("local link {}: no ring for sender pid {}: {}", address_, peer.pid,
                   Errno("memfd"));
      if (memfd >= 0) close(memfd);
      continue;
    }
    link->ring = new (memory) LocalRing{};
    link->mapped = bytes;
    link->ring->magic = LocalRing::kMagic;
    link->ring->capacity = ring_bytes_;
    // Until our loop first polls with this link listed, it may sleep without having asked for
    // the doorbell: the sender rings for its first messages.
    link->ring->receiver_sleeping.store(1, std::memory_order_relaxed);
    RingHandover handover;
    cmsghdr* header = CMSG_FIRSTHDR(&handover.message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(header), &memfd, sizeof(int));
    const bool sent = sendmsg(fd, &handover.message, MSG_NOSIGNAL) == 1;
    close(memfd);
    if (!sent) {
      spdlog::warn("local link {}: cannot hand sender pid {} its ring: {}", address_, peer.pid,
                   Errno("sendmsg"));
      continue;
    }
    spdlog::debug("local link {}: sender pid {} connected", address_, peer.pid);
    links_.push_back(std::move(link));
  }
}

void LocalInbox::Service(std::span<const zmq::pollitem_t> items) {
  if (items.empty()) return;
  // Before accepting: the links after the first item are those AppendPollItems listed.
  for (size_t i = 0; i < links_.size() && i + 1 < items.size(); ++i) {
    if ((items[i + 1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) == 0) continue;
    Link* link = links_[i].get();
    char bytes[64];
    while (true) {
      const ssize_t n = recv(link->fd, bytes, sizeof(bytes), MSG_DONTWAIT);
      if (n > 0) continue;  // doorbell rings: the messages themselves are in the ring
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        link->sender_gone = true;
      }
      break;
    }
  }
  if (items[0].revents & ZMQ_POLLIN) Accept();
  // A sender that left: its ring is dropped once read to the end.
  for (size_t i = 0; i < links_.size();) {
    Link& link = *links_[i];
    if (link.sender_gone && &link != held_ &&
        link.ring->head.load(std::memory_order_acquire) == link.tail) {
      links_.erase(links_.begin() + static_cast<std::ptrdiff_t>(i));
      next_link_ = 0;
    } else {
      ++i;
    }
  }
}

void LocalInbox::ReleaseHeld() {
  if (held_ == nullptr) return;
  held_->tail = held_end_;
  held_->ring->tail.store(held_end_, std::memory_order_release);
  held_ = nullptr;
}

bool LocalInbox::Next(std::vector<Frame>* frames, absl::Status* broken) {
  ReleaseHeld();
  frames->clear();
  for (size_t k = 0; k < links_.size(); ++k) {
    const size_t index = (next_link_ + k) % links_.size();
    Link& link = *links_[index];
    LocalRing& ring = *link.ring;
    const uint64_t capacity = ring_bytes_;  // ours, not the shared copy
    std::string why;
    while (why.empty()) {
      const uint64_t head = ring.head.load(std::memory_order_acquire);
      if (head == link.tail) break;
      const uint64_t waiting = head - link.tail;
      const size_t offset = static_cast<size_t>(link.tail % capacity);
      // A record never wraps around the ring's end (a skip marker fills the end instead).
      const size_t available = static_cast<size_t>(std::min<uint64_t>(waiting, capacity - offset));
      uint32_t fields[2] = {0, 0};
      if (waiting <= capacity && available >= sizeof(fields)) {
        std::memcpy(fields, ring.data() + offset, sizeof(fields));
      }
      if (fields[1] == kSkip) {
        if (fields[0] < kLinkAlign || fields[0] % kLinkAlign != 0 || fields[0] > available) {
          why = absl::StrCat("a skip of ", fields[0], " bytes at offset ", offset);
          break;
        }
        link.tail += fields[0];
        ring.tail.store(link.tail, std::memory_order_release);
        continue;
      }
      size_t total = 0;
      const LinkRecordRead read =
          ReadLinkRecord(ring.data() + offset, available, capacity / 2, frames, &total, &why);
      if (read == LinkRecordRead::kIncomplete) {
        why = absl::StrCat("a record of ", total, " bytes at offset ", offset, " with ", waiting,
                           " bytes written");
      }
      if (read != LinkRecordRead::kComplete) break;
      held_ = &link;
      held_end_ = link.tail + total;
      next_link_ = index + 1;
      return true;
    }
    if (!why.empty()) {
      // Nothing after a broken record can be trusted: the sender goes back to its socket.
      *broken = absl::InvalidArgumentError(absl::StrCat("local link: ", why, "; ring dropped"));
      frames->clear();
      links_.erase(links_.begin() + static_cast<std::ptrdiff_t>(index));
      next_link_ = 0;
      return false;
    }
  }
  return false;
}

bool LocalInbox::HasMessage() const {
  for (const std::unique_ptr<Link>& link : links_) {
    if (link->ring->head.load(std::memory_order_acquire) != link->tail) return true;
  }
  return false;
}

bool LocalInbox::PrepareToSleep() {
  for (const std::unique_ptr<Link>& link : links_) {
    link->ring->receiver_sleeping.store(1, std::memory_order_relaxed);
  }
  // Pairs with the sender's fence between publishing a record and reading the flag: either it
  // sees the flag and rings, or we see its record here.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool quiet = true;
  for (const std::unique_ptr<Link>& link : links_) {
    if (link->ring->head.load(std::memory_order_relaxed) != link->tail) quiet = false;
  }
  if (!quiet) Awake();
  return quiet;
}

void LocalInbox::Awake() {
  for (const std::unique_ptr<Link>& link : links_) {
    link->ring->receiver_sleeping.store(0, std::memory_order_relaxed);
  }
}

// ---- Sender -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LocalOutlet>> LocalOutlet::Connect(const std::string& address) {
  socklen_t length = 0;
  absl::StatusOr<sockaddr_un> a = AbstractAddress(address, &length);
  if (!a.ok()) return a.status();
  std::unique_ptr<LocalOutlet> outlet(new LocalOutlet());
  outlet->address_ = address;
  outlet->fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (outlet->fd_ < 0) {
    outlet->Fail(Errno("socket"));
  } else if (connect(outlet->fd_, reinterpret_cast<const sockaddr*>(&*a), length) != 0) {
    // Another host or network namespace, or the inbox is gone: the socket carries everything.
    outlet->Fail(Errno("connect"));
  }
  return outlet;
}

LocalOutlet::~LocalOutlet() {
  if (ring_ != nullptr) munmap(ring_, mapped_bytes_);
  if (fd_ >= 0) close(fd_);
}

void LocalOutlet::Fail(const std::string& why) {
  spdlog::debug("local link to {}: not used ({})", address_, why);
  if (ring_ != nullptr) munmap(ring_, mapped_bytes_);
  ring_ = nullptr;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void LocalOutlet::TakeRing() {
  RingHandover handover;
  const ssize_t n = recvmsg(fd_, &handover.message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;  // not yet
  const cmsghdr* header = n == 1 ? CMSG_FIRSTHDR(&handover.message) : nullptr;
  if (header == nullptr || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS ||
      header->cmsg_len != CMSG_LEN(sizeof(int))) {
    Fail(n < 0 ? Errno("recvmsg") : "the inbox sent no ring");
    return;
  }
  int memfd = -1;
  std::memcpy(&memfd, CMSG_DATA(header), sizeof(int));
  struct stat info {};
  void* memory = MAP_FAILED;
  if (fstat(memfd, &info) == 0 && static_cast<size_t>(info.st_size) > LocalRing::kDataOffset) {
    mapped_bytes_ = static_cast<size_t>(info.st_size);
    memory =
        mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
  }
  close(memfd);
  if (memory == MAP_FAILED) {
    Fail("cannot map the ring");
    return;
  }
  ring_ = static_cast<LocalRing*>(memory);
  // Kept on our side: the sizes and positions that bound our writes are never re-read from
  // memory the other process can change.
  capacity_ = ring_->capacity;
  head_ = ring_->head.load(std::memory_order_relaxed);
  if (ring_->magic != LocalRing::kMagic || capacity_ != mapped_bytes_ - LocalRing::kDataOffset ||
      capacity_ % kLinkAlign != 0 || head_ != 0) {
    Fail("the ring's header is not a local link's");
  }
}

bool LocalOutlet::ReceiverGone() {
  if (fd_ < 0) return receiver_gone_;
  if (!up()) return false;
  if (PeerClosed(fd_)) {
    Fail("the receiver is gone");
    receiver_gone_ = true;
  }
  return receiver_gone_;
}

bool LocalOutlet::TrySend(std::span<const Frame> frames) {
  if (fd_ < 0) return false;
  if (ring_ == nullptr) {
    TakeRing();
    if (ring_ == nullptr) return false;
  }
  if (ring_->receiver_closed.load(std::memory_order_acquire) != 0) {
    Fail("the receiver closed the link");
    return false;
  }
  // A receiver killed outright sets no flag, but its end of the connection closes: then the
  // caller's socket says at once that the peer is gone (a ring would swallow the message).
  if (ReceiverGone()) return false;
  const uint64_t capacity = capacity_;
  const size_t need = LinkRecordBytes(frames);
  if (need == 0 || need > capacity / 2) return false;
  uint64_t head = head_;
  const uint64_t tail = ring_->tail.load(std::memory_order_acquire);
  const size_t offset = static_cast<size_t>(head % capacity);
  const size_t skip = capacity - offset < need ? capacity - offset : 0;
  if (tail > head || head + skip + need - tail > capacity) return false;  // no room now
  uint8_t* data = ring_->data();
  if (skip > 0) {
    const uint32_t marker[2] = {static_cast<uint32_t>(skip), kSkip};
    std::memcpy(data + offset, marker, sizeof(marker));
    head += skip;
  }
  uint8_t* record = data + head % capacity;
  WriteLinkRecordHeader(frames, need, record);
  size_t at = LinkRecordHeaderBytes(frames.size());
  for (const Frame& frame : frames) {
    if (frame.size > 0) std::memcpy(record + at, frame.data, frame.size);
    at += LinkAlign(frame.size);
  }
  head_ = head + need;
  ring_->head.store(head_, std::memory_order_release);
  // Pairs with the receiver's fence in PrepareToSleep.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ring_->receiver_sleeping.load(std::memory_order_relaxed) != 0) {
    const char bell = 1;
    if (send(fd_, &bell, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN &&
        errno != EWOULDBLOCK) {
      // The receiver is gone; what is in the ring is lost with it, as a socket's queue would be.
      Fail(Errno("doorbell"));
    }
  }
  return true;
}

}  // namespace shardrun
