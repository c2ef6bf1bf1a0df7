#include "proto/tcp_link.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "proto/link_record.h"
#include "proto/peer_closed.h"
#include "spdlog/spdlog.h"

namespace shardrun {

namespace {

std::string Errno(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

bool WouldBlock() { return errno == EAGAIN || errno == EWOULDBLOCK; }

// "tcp:<host>:<port>" or "tcp:[<v6>]:<port>" -> host and port.
absl::Status ParseAddress(const std::string& address, std::string* host, std::string* port) {
  constexpr std::string_view kPrefix = "tcp:";
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("not a TCP link address (tcp:<host>:<port>): ", address));
  };
  if (address.rfind(kPrefix, 0) != 0) return bad();
  const std::string rest = address.substr(kPrefix.size());
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad();
  *host = rest.substr(0, colon);
  *port = rest.substr(colon + 1);
  if (host->front() == '[') {
    if (host->size() < 3 || host->back() != ']') return bad();
    *host = host->substr(1, host->size() - 2);
  }
  if (port->empty() || port->size() > 5 ||
      !std::all_of(port->begin(), port->end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(*port) < 1 || std::stoi(*port) > 65535) {
    return bad();
  }
  return absl::OkStatus();
}

absl::StatusOr<addrinfo*> Resolve(const std::string& host, const char* port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(host.c_str(), port, &hints, &found); error != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, " for a TCP link: ", gai_strerror(error)));
  }
  return found;
}

bool IsLoopback(const sockaddr* address) {
  if (address->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
  return IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
}

std::string PeerName(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  char host[NI_MAXHOST] = "?";
  char port[NI_MAXSERV] = "?";
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0) {
    getnameinfo(reinterpret_cast<sockaddr*>(&peer), length, host, sizeof(host), port, sizeof(port),
                NI_NUMERICHOST | NI_NUMERICSERV);
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace

// ---- Receiver ---------------------------------------------------------------------------

// One sender's connection and the bytes read from it: [begin, end) of `buffer` are unread;
// records start at multiples of kLinkAlign from the buffer's start, which is aligned, so
// tensors read in place are aligned too.
struct TcpInbox::Connection {
  static constexpr size_t kFirstCapacity = size_t{64} << 10;

  int fd = -1;
  std::string peer;
  uint8_t* buffer = nullptr;
  size_t capacity = 0;
  size_t begin = 0;
  size_t end = 0;
  size_t held = 0;        // bytes of the record handed out (released by the next Next)
  bool readable = false;  // polled readable and not read to the end since
  bool ack_owed = false;  // bytes read since the last acknowledgement we sent (SendAck)

  ~Connection() {
    ::operator delete[](buffer, std::align_val_t{64});
    if (fd >= 0) close(fd);
  }

  // Makes room for a record of `total` bytes from `begin` (moved to the start).
  void MakeRoom(size_t total) {
    const size_t unread = end - begin;
    if (total > capacity) {
      size_t grown = std::max(capacity, kFirstCapacity);
      while (grown < total) grown *= 2;
      auto* bigger = static_cast<uint8_t*>(::operator new[](grown, std::align_val_t{64}));
      if (unread > 0) std::memcpy(bigger, buffer + begin, unread);
      ::operator delete[](buffer, std::align_val_t{64});
      buffer = bigger;
      capacity = grown;
    } else if (begin > 0) {
      std::memmove(buffer, buffer + begin, unread);
    }
    begin = 0;
    end = unread;
  }

  // Acknowledges what was read, now that the receiving loop has nothing else to do. The
  // connection is kept in delayed-acknowledgement mode (TCP_QUICKACK 0, set at accept): left to
  // itself the kernel acknowledges every record inside the recv that reads it, a trip through
  // the loopback stack (both sockets) on the hop's critical path: 10 -> 4-5 us per 8 KiB recv
  // after a weight-streaming step, measured on a 2-vCPU Zen 4. A non-zero value sends the owed
  // acknowledgement (tcp(7)); zero then puts the connection back into delayed mode, which the
  // kernel leaves when its own delayed-acknowledgement timer fires (a long step).
  void SendAck() {
    if (!ack_owed) return;
    ack_owed = false;
    for (const int quickack : {1, 0}) {
      setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &quickack, sizeof(quickack));
    }
  }

  // Whether a whole record waits in the buffer (its size field read only).
  bool HasRecord() const {
    if (end - begin < 8) return false;
    uint32_t total = 0;
    std::memcpy(&total, buffer + begin, sizeof(total));
    return total <= end - begin;
  }
};

absl::StatusOr<std::unique_ptr<TcpInbox>> TcpInbox::Listen(const std::string& host) {
  sockaddr_storage address{};
  socklen_t length = sizeof(sockaddr_in);
  if (host == "*") {
    auto* any = reinterpret_cast<sockaddr_in*>(&address);
    any->sin_family = AF_INET;
    any->sin_addr.s_addr = htonl(INADDR_ANY);
  } else {
    absl::StatusOr<addrinfo*> found = Resolve(host, "0");
    if (!found.ok()) return found.status();
    std::memcpy(&address, (*found)->ai_addr, (*found)->ai_addrlen);
    length = (*found)->ai_addrlen;
    freeaddrinfo(*found);
  }
  const int family = address.ss_family;
  // Peers on other hosts reach a non-loopback host's address: listen on every interface, as
  // the ZeroMQ sockets beside it do.
  if (!IsLoopback(reinterpret_cast<sockaddr*>(&address))) {
    if (family == AF_INET) {
      reinterpret_cast<sockaddr_in*>(&address)->sin_addr.s_addr = htonl(INADDR_ANY);
    } else {
      reinterpret_cast<sockaddr_in6*>(&address)->sin6_addr = in6addr_any;
    }
  }
  std::unique_ptr<TcpInbox> inbox(new TcpInbox());
  inbox->listen_fd_ = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (inbox->listen_fd_ < 0) return absl::UnavailableError(Errno("TCP link socket"));
  if (bind(inbox->listen_fd_, reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      listen(inbox->listen_fd_, 16) != 0) {
    return absl::UnavailableError(Errno("TCP link listen"));
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  if (getsockname(inbox->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &bound_length) != 0) {
    return absl::UnavailableError(Errno("TCP link getsockname"));
  }
  const int port = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                           : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  const bool v6 = host.find(':') != std::string::npos;
  inbox->address_ = absl::StrCat("tcp:", v6 ? "[" : "", host, v6 ? "]" : "", ":", port);
  return inbox;
}

TcpInbox::~TcpInbox() {
  connections_.clear();
  if (listen_fd_ >= 0) close(listen_fd_);
}

void TcpInbox::AppendPollItems(std::vector<zmq::pollitem_t>* items) const {
  items->push_back({nullptr, listen_fd_, ZMQ_POLLIN, 0});
  for (const std::unique_ptr<Connection>& c : connections_) {
    items->push_back({nullptr, c->fd, ZMQ_POLLIN, 0});
  }
}

void TcpInbox::Accept() {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: no one else waits
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->peer = PeerName(fd);
    if (static_cast<int>(connections_.size()) >= kTcpLinkMaxSenders) {
      spdlog::warn("TCP link {}: refused {} (already {} senders)", address_, c->peer,
                   connections_.size());
      continue;  // ~Connection closes it
    }
    c->MakeRoom(Connection::kFirstCapacity);
    const int delayed = 0;  // see Connection::SendAck
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &delayed, sizeof(delayed));
    spdlog::debug("TCP link {}: sender {} connected", address_, c->peer);
    connections_.push_back(std::move(c));
  }
}

void TcpInbox::Service(std::span<const zmq::pollitem_t> items) {
  if (items.empty()) return;
  for (size_t i = 0; i < connections_.size() && i + 1 < items.size(); ++i) {
    if (items[i + 1].fd == connections_[i]->fd &&
        (items[i + 1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) != 0) {
      connections_[i]->readable = true;
    }
  }
  if (items[0].revents & ZMQ_POLLIN) Accept();
}

void TcpInbox::Drop(size_t index) {
  if (connections_[index].get() == held_) held_ = nullptr;
  connections_.erase(connections_.begin() + static_cast<std::ptrdiff_t>(index));
  next_ = 0;
}

bool TcpInbox::Next(std::vector<Frame>* frames, absl::Status* broken) {
  if (held_ != nullptr) {
    held_->begin += held_->held;
    if (held_->begin == held_->end) held_->begin = held_->end = 0;
    held_ = nullptr;
  }
  frames->clear();
  for (size_t k = 0; k < connections_.size(); ++k) {
    const size_t index = (next_ + k) % connections_.size();
    Connection& c = *connections_[index];
    std::string why;
    bool gone = false;
    while (true) {
      size_t total = 0;
      const LinkRecordRead read = ReadLinkRecord(c.buffer + c.begin, c.end - c.begin,
                                                 kTcpLinkMaxRecord, frames, &total, &why);
      if (read == LinkRecordRead::kComplete) {
        held_ = &c;
        c.held = total;
        next_ = index + 1;
        return true;
      }
      if (read == LinkRecordRead::kBroken || !c.readable) break;
      c.MakeRoom(std::max(total, Connection::kFirstCapacity));
      const size_t room = c.capacity - c.end;
      const ssize_t n = recv(c.fd, c.buffer + c.end, room, MSG_DONTWAIT);
      if (n > 0) {
        c.end += static_cast<size_t>(n);
        c.ack_owed = true;
        // Less than asked for: the socket is read to the end (poll says when more comes).
        if (static_cast<size_t>(n) < room) c.readable = false;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && WouldBlock()) {
        c.readable = false;
      } else {
        // The sender left (or its connection broke). A record it left unfinished was given up
        // on purpose (TcpOutlet::TrySend) and went by socket: nothing is lost by dropping it.
        spdlog::debug("TCP link {}: sender {} left{}", address_, c.peer,
                      c.end > c.begin ? " inside a record" : "");
        gone = true;
        break;
      }
    }
    if (!why.empty()) {
      // Nothing after a broken record can be trusted: the sender goes back to its socket.
      *broken = absl::InvalidArgumentError(
          absl::StrCat("TCP link from ", c.peer, ": ", why, "; connection dropped"));
      frames->clear();
      Drop(index);
      return false;
    }
    if (gone) {
      Drop(index);
      --k;  // the next connection moved into this place (next_ is now 0)
      if (connections_.empty()) break;
    }
  }
  // Nothing to hand out: the loop is idle until the next message, the time to acknowledge
  // what it read (off the critical path of every hop).
  for (const std::unique_ptr<Connection>& c : connections_) c->SendAck();
  frames->clear();
  return false;
}

bool TcpInbox::HasMessage() const {
  for (const std::unique_ptr<Connection>& c : connections_) {
    if (c->readable || (c.get() != held_ && c->HasRecord())) return true;
    if (c.get() == held_ && c->end - c->begin > c->held) return true;  // more after the held one
  }
  return false;
}

// ---- Sender -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TcpOutlet>> TcpOutlet::Connect(const std::string& address) {
  std::string host, port;
  if (absl::Status s = ParseAddress(address, &host, &port); !s.ok()) return s;
  absl::StatusOr<addrinfo*> found = Resolve(host, port.c_str());
  if (!found.ok()) return found.status();
  std::unique_ptr<TcpOutlet> outlet(new TcpOutlet());
  outlet->address_ = address;
  const addrinfo* a = *found;
  outlet->fd_ = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (outlet->fd_ < 0) {
    outlet->Fail(Errno("socket"));
  } else {
    // Each record is written whole by one call: Nagle's delay would only hold it back.
    const int one = 1;
    setsockopt(outlet->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(outlet->fd_, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      outlet->Fail(Errno("connect"));
    }
  }
  freeaddrinfo(*found);
  return outlet;
}

TcpOutlet::~TcpOutlet() {
  if (fd_ >= 0) close(fd_);
}

void TcpOutlet::Fail(const std::string& why) {
  spdlog::debug("TCP link to {}: not used ({})", address_, why);
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  connected_ = false;
}

bool TcpOutlet::up() {
  if (fd_ < 0) return false;
  if (connected_) return true;
  pollfd p{fd_, POLLOUT, 0};
  if (poll(&p, 1, 0) <= 0) return false;  // still connecting
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0) {
    errno = error;
    Fail(Errno("connect"));
    return false;
  }
  connected_ = true;
  return true;
}

bool TcpOutlet::ReceiverGone() {
  if (fd_ < 0) return receiver_gone_;
  if (!up()) return false;
  if (PeerClosed(fd_)) {
    Fail("the receiver is gone");
    receiver_gone_ = true;
  }
  return receiver_gone_;
}

bool TcpOutlet::TrySend(std::span<const Frame> frames, std::chrono::milliseconds finish_within) {
  if (!up()) return false;
  const size_t need = LinkRecordBytes(frames);
  if (need == 0 || need > kTcpLinkMaxRecord) return false;
  if (need > kTcpLinkAlwaysTry) {
    // Room for the whole record now, or the socket takes it (the kernel counts some overhead
    // against the buffer: half of it is what we count on).
    int queued = 0;
    int buffer = 0;
    socklen_t length = sizeof(buffer);
    if (ioctl(fd_, SIOCOUTQ, &queued) != 0 ||
        getsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &buffer, &length) != 0 ||
        static_cast<size_t>(queued) + need > static_cast<size_t>(buffer) / 2) {
      return false;
    }
  }
  static constexpr uint8_t kPadding[kLinkAlign] = {};
  header_.resize(LinkRecordHeaderBytes(frames.size()));
  WriteLinkRecordHeader(frames, need, header_.data());
  iovec parts[1 + 2 * kLinkMaxFrames];
  size_t count = 0;
  parts[count++] = {header_.data(), header_.size()};
  for (const Frame& f : frames) {
    if (f.size > 0) parts[count++] = {const_cast<uint8_t*>(f.data), f.size};
    if (const size_t pad = LinkAlign(f.size) - f.size; pad > 0) {
      parts[count++] = {const_cast<uint8_t*>(kPadding), pad};
    }
  }
  msghdr message{};
  message.msg_iov = parts;
  message.msg_iovlen = count;
  size_t sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + finish_within;
  while (true) {
    const ssize_t n = sendmsg(fd_, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && !WouldBlock()) {
      // A reset or closed connection: the receiver's process closed its end (with our last
      // record unread, a close resets the connection rather than ending it).
      const bool reset = errno == ECONNRESET || errno == EPIPE;
      Fail(Errno("send"));
      receiver_gone_ = reset;
      return false;
    }
    if (n < 0 && sent == 0) return false;  // the connection takes nothing now: by socket
    if (n > 0) {
      sent += static_cast<size_t>(n);
      // A receiver that is gone swallows the record: then the caller's socket takes the message
      // (and says at once that the peer is gone where it can). Asked after the send, not
      // before: the hop is on its way by then (a peek from cold caches cost ~8 us of it).
      if (sent == need) return !ReceiverGone();
      // Skip what went out; the rest of the record follows.
      size_t skip = static_cast<size_t>(n);
      while (skip >= message.msg_iov->iov_len) {
        skip -= message.msg_iov->iov_len;
        ++message.msg_iov;
        --message.msg_iovlen;
      }
      message.msg_iov->iov_base = static_cast<uint8_t*>(message.msg_iov->iov_base) + skip;
      message.msg_iov->iov_len -= skip;
    }
    // Part of the record is out: finish it once the receiver makes room, or give the whole
    // message to the socket and close the connection so that the receiver drops the part.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLOUT, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      Fail(absl::StrCat("the receiver took ", sent, " of ", need, " bytes in ",
                        finish_within.count(), " ms"));
      return false;
    }
  }
}

}  // namespace shardrun
