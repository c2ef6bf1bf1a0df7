// Whether the far end of a connection that only we write to has closed it: how a link's sender
// learns that its receiver's process exited or was killed (the kernel closes its end), shared
// by the shared-memory link's doorbell socket and the TCP link's connection.
#ifndef SHARDRUN_PROTO_PEER_CLOSED_H_
#define SHARDRUN_PROTO_PEER_CLOSED_H_

namespace shardrun {

// Peeks at `fd` without waiting: true on an end of stream or an error other than "nothing
// yet" (the receiver never writes, so any of those means it is gone). One system call.
bool PeerClosed(int fd);

}  // namespace shardrun

#endif  // SHARDRUN_PROTO_PEER_CLOSED_H_
