#include "tests/tcp_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

namespace shardrun::testing {

TcpRelay::TcpRelay(int target_port) : target_port_(target_port) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 16) != 0) {
    return;  // port() stays 0: the test fails on it
  }
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (pipe2(stop_, O_CLOEXEC) != 0) return;
  thread_ = std::thread([this] { Run(); });
}

TcpRelay::~TcpRelay() {
  if (thread_.joinable()) {
    (void)!write(stop_[1], "x", 1);
    thread_.join();
  }
  for (int fd : {listen_fd_, stop_[0], stop_[1]}) {
    if (fd >= 0) close(fd);
  }
}

std::string TcpRelay::captured() {
  std::lock_guard<std::mutex> lock(mutex_);
  return captured_;
}

int TcpRelay::Connect() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(target_port_));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void TcpRelay::Run() {
  struct Link {
    int from, to;
    bool open;
  };
  std::vector<Link> links;  // both directions of each connection
  std::vector<char> buf(65536);
  while (true) {
    std::vector<pollfd> fds = {{stop_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    // poll ignores negative descriptors: a direction that reached its end stays listed.
    for (const Link& l : links) fds.push_back({l.open ? l.from : -1, POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) break;
    if (fds[0].revents) break;
    if (fds[1].revents & POLLIN) {
      const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      const int server = client >= 0 ? Connect() : -1;
      if (server >= 0) {
        links.push_back({client, server, true});
        links.push_back({server, client, true});
      } else if (client >= 0) {
        close(client);
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Link& link = links[i - 2];
      const ssize_t n = read(link.from, buf.data(), buf.size());
      if (n <= 0) {
        shutdown(link.to, SHUT_WR);
        link.open = false;
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        captured_.append(buf.data(), static_cast<size_t>(n));
      }
      for (ssize_t done = 0; done < n;) {
        const ssize_t w = write(link.to, buf.data() + done, static_cast<size_t>(n - done));
        if (w <= 0) break;
        done += w;
      }
    }
  }
  for (const Link& l : links) close(l.from);  // each descriptor is `from` of one link
}

}  // namespace shardrun::testing
