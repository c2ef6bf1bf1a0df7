// A TCP relay on 127.0.0.1 that forwards every connection to a target port and keeps a copy
// of every byte it forwards in either direction: what an eavesdropper on the wire would see.
#ifndef SHARDRUN_TESTS_TCP_RELAY_H_
#define SHARDRUN_TESTS_TCP_RELAY_H_

#include <mutex>
#include <string>
#include <thread>

namespace shardrun::testing {

class TcpRelay {
 public:
  explicit TcpRelay(int target_port);
  ~TcpRelay();  // stops the thread and closes every connection
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  int port() const { return port_; }
  std::string captured();

 private:
  int Connect();
  void Run();

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_[2] = {-1, -1};
  std::thread thread_;
  std::mutex mutex_;
  std::string captured_;
};

}  // namespace shardrun::testing

#endif  // SHARDRUN_TESTS_TCP_RELAY_H_
