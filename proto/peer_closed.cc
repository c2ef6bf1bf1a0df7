#include "proto/peer_closed.h"

#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>

namespace shardrun {

bool PeerClosed(int fd) {
  char probe;
  const ssize_t peeked = recv(fd, &probe, 1, MSG_DONTWAIT | MSG_PEEK);
  if (peeked == 0) return true;
  return peeked < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

}  // namespace shardrun
