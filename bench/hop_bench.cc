// The floor under a layer pipeline's hop: a ring of K processes passing an activation-sized
// ZeroMQ message (PUSH/PULL, as stages do), each "computing" between receive and send, with the
// same polling strategy as the workers (proto/arrival_spin.h). What it prints is what the
// transport alone costs on this machine, beside which shardrun's own hop ("hop in" in a
// cluster run's summary) is judged.
//
//   hop_bench [--stages 4] [--tokens 300] [--compute-us 5000] [--memory [--nta]]
//             [--poll block|spin] [--transport tcp|ipc|local|tcplink] [--bytes 8192]
//
// --transport local passes the message through shardrun's same-host link (proto/local_link.h:
// a shared-memory ring, a doorbell only for a sleeping receiver) instead of ZeroMQ; tcplink
// through its TCP link (proto/tcp_link.h: a connection per sender, read by the receiving loop
// itself), the path between hosts.
//
// --memory streams a 160 MiB buffer while computing, as a decode step streams its weights: the
// ZeroMQ I/O threads and the kernel's TCP path then run from cold caches, which is most of
// what a hop costs on a small VM. --nta streams it as shardrun's decode kernels stream their
// weights (a non-temporal prefetch before each line's read: kernels_avx512_impl.h's
// StreamPast), which leaves the rest of the caches alone.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "proto/arrival_spin.h"
#include "proto/link.h"
#include "zmq.hpp"

namespace {

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Options {
  int stages = 4;
  int tokens = 300;
  int compute_us = 5000;
  bool memory = false;
  bool nta = false;
  std::string poll = "block";
  std::string transport = "tcp";
  int bytes = 8192;
  std::vector<int> ports;  // tcp: one per stage
  std::string ipc_dir;
  std::vector<std::unique_ptr<shardrun::LinkInbox>> inboxes;  // local, tcplink: one per stage
};

std::string Endpoint(const Options& o, int stage) {
  if (o.transport == "ipc") return "ipc://" + o.ipc_dir + "/stage" + std::to_string(stage);
  return "tcp://127.0.0.1:" + std::to_string(o.ports[static_cast<size_t>(stage)]);
}

// Ports the kernel calls free now, chosen before the stages fork (each must know the next's).
std::vector<int> FreePorts(int n) {
  std::vector<int> sockets, ports;
  for (int i = 0; i < n; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return {};
    }
    sockets.push_back(fd);  // held until all are chosen, so no port comes twice
    ports.push_back(ntohs(address.sin_port));
  }
  for (int fd : sockets) close(fd);
  return ports;
}

// Busy for `us` microseconds; with `memory`, reading a buffer far larger than the caches.
void Compute(const Options& o, std::vector<float>& buffer) {
  const int64_t until = NowMicros() + o.compute_us;
  size_t at = 0;
  float sum = 0;
  while (NowMicros() < until) {
    if (!o.memory) continue;
    for (int k = 0; k < 16384; ++k) {
      const float* line = &buffer[(at + static_cast<size_t>(k) * 16) % buffer.size()];
      if (o.nta) __builtin_prefetch(line, 0, 0);  // locality 0: prefetchnta on x86
      sum += *line;
    }
    at += 16384 * 16;
  }
  if (sum == 1.5f) std::printf(" ");  // keeps the reads
}

// The same ring through links: each stage reads its inbox and writes to the next's.
std::vector<int64_t> RunLinkStage(const Options& o, int stage) {
  shardrun::LinkInbox& inbox = *o.inboxes[static_cast<size_t>(stage)];
  auto outlet = shardrun::LinkOutlet::Connect(
      o.inboxes[static_cast<size_t>((stage + 1) % o.stages)]->address());
  if (!outlet.ok()) return {};
  std::vector<float> buffer(o.memory ? (40u << 20) : 1, 1.0f);
  std::vector<uint8_t> message(static_cast<size_t>(o.bytes));
  shardrun::ArrivalSpin arrivals(o.poll == "spin" ? shardrun::PollMode::kSpin
                                                  : shardrun::PollMode::kBlock);
  std::vector<int64_t> hops;
  std::vector<zmq::pollitem_t> items;
  std::vector<shardrun::Frame> frames;
  // Waits for a message, serving the inbox (a new sender, doorbells) as the workers do.
  auto receive = [&](bool wait) {
    while (true) {
      absl::Status broken;
      if (inbox.Next(&frames, &broken)) return true;
      items.clear();
      inbox.AppendPollItems(&items);
      auto sleep = wait ? arrivals.SleepFor(NowMicros(), std::chrono::milliseconds(50))
                        : std::chrono::milliseconds(0);
      if (sleep.count() > 0 && !inbox.PrepareToSleep()) sleep = std::chrono::milliseconds(0);
      zmq::poll(items.data(), items.size(), sleep);
      inbox.Awake();
      inbox.Service(items);
      if (!wait) return false;
      if (sleep.count() == 0) std::this_thread::yield();
    }
  };
  auto send = [&] {
    const int64_t now = NowMicros();
    std::memcpy(message.data(), &now, sizeof(now));
    const shardrun::Frame frame{message.data(), message.size()};
    // Until the next stage has handed over its ring, keep serving our own inbox.
    while (!(*outlet)->TrySend({&frame, 1})) receive(false);
  };
  if (stage == 0) send();
  for (int token = 0; token < o.tokens; ++token) {
    receive(true);
    const int64_t now = NowMicros();
    arrivals.Arrived(now);
    int64_t sent = 0;
    std::memcpy(&sent, frames[0].data, sizeof(sent));
    hops.push_back(now - sent);
    Compute(o, buffer);
    if (!(stage == 0 && token + 1 == o.tokens)) send();
  }
  return hops;
}

// One stage: receive from the previous, compute, send to the next. Returns its hop latencies.
std::vector<int64_t> RunStage(const Options& o, int stage) {
  if (o.transport == "local" || o.transport == "tcplink") return RunLinkStage(o, stage);
  zmq::context_t context;
  zmq::socket_t in(context, zmq::socket_type::pull);
  zmq::socket_t out(context, zmq::socket_type::push);
  in.bind(Endpoint(o, stage));
  out.connect(Endpoint(o, (stage + 1) % o.stages));
  std::vector<float> buffer(o.memory ? (40u << 20) : 1, 1.0f);
  std::vector<uint8_t> message(static_cast<size_t>(o.bytes));
  shardrun::ArrivalSpin arrivals(o.poll == "spin" ? shardrun::PollMode::kSpin
                                                  : shardrun::PollMode::kBlock);
  std::vector<int64_t> hops;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // every stage bound
  auto send = [&] {
    const int64_t now = NowMicros();
    std::memcpy(message.data(), &now, sizeof(now));
    out.send(zmq::buffer(message), zmq::send_flags::none);
  };
  if (stage == 0) send();
  for (int token = 0; token < o.tokens; ++token) {
    zmq::message_t got;
    while (true) {
      const auto sleep = arrivals.SleepFor(NowMicros(), std::chrono::milliseconds(50));
      zmq::pollitem_t item{in.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, sleep) > 0 && in.recv(got, zmq::recv_flags::dontwait)) break;
      if (sleep.count() == 0) std::this_thread::yield();
    }
    const int64_t now = NowMicros();
    arrivals.Arrived(now);
    int64_t sent = 0;
    std::memcpy(&sent, got.data(), sizeof(sent));
    hops.push_back(now - sent);
    Compute(o, buffer);
    if (!(stage == 0 && token + 1 == o.tokens)) send();
  }
  return hops;
}

int64_t At(const std::vector<int64_t>& sorted, double q) {
  return sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app("ZeroMQ hop latency in a ring of processes (the floor under a layer pipeline)");
  app.add_option("--stages", o.stages)->check(CLI::Range(2, 16));
  app.add_option("--tokens", o.tokens)->check(CLI::Range(20, 100000));
  app.add_option("--compute-us", o.compute_us)->check(CLI::NonNegativeNumber);
  app.add_flag("--memory", o.memory, "Stream a large buffer while computing");
  app.add_flag("--nta", o.nta, "Stream it with non-temporal prefetches, as the decode kernels do")
      ->needs("--memory");
  app.add_option("--poll", o.poll)->check(CLI::IsMember({"block", "spin"}));
  app.add_option("--transport", o.transport)
      ->check(CLI::IsMember({"tcp", "ipc", "local", "tcplink"}));
  app.add_option("--bytes", o.bytes)->check(CLI::Range(8, 1 << 24));
  CLI11_PARSE(app, argc, argv);
  o.ports = FreePorts(o.stages);
  if (o.ports.empty()) {
    std::fprintf(stderr, "no free TCP ports on 127.0.0.1\n");
    return 1;
  }
  char dir[] = "/tmp/hop_bench.XXXXXX";
  if (o.transport == "ipc") o.ipc_dir = mkdtemp(dir);
  const bool links = o.transport == "local" || o.transport == "tcplink";
  for (int stage = 0; links && stage < o.stages; ++stage) {
    auto inbox = o.transport == "local"
                     ? shardrun::LinkInbox::Open(shardrun::LinkMode::kAuto, "")
                     : shardrun::LinkInbox::Open(shardrun::LinkMode::kTcp, "127.0.0.1");
    if (!inbox.ok()) {
      std::fprintf(stderr, "%s\n", std::string(inbox.status().message()).c_str());
      return 1;
    }
    o.inboxes.push_back(*std::move(inbox));
  }

  // Each stage reports its sorted latencies through a pipe: "p50 p90 p99" in microseconds.
  int fds[2];
  if (pipe(fds) != 0) return 1;
  std::vector<pid_t> children;
  for (int stage = 0; stage < o.stages; ++stage) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<int64_t> hops = RunStage(o, stage);
      hops.erase(hops.begin(), hops.begin() + 10);  // warm-up
      std::sort(hops.begin(), hops.end());
      char line[128];
      const int n = std::snprintf(
          line, sizeof(line), "%d %lld %lld %lld\n", stage, static_cast<long long>(At(hops, 0.5)),
          static_cast<long long>(At(hops, 0.9)), static_cast<long long>(At(hops, 0.99)));
      if (write(fds[1], line, static_cast<size_t>(n)) != n) _exit(1);
      _exit(0);
    }
    children.push_back(pid);
  }
  close(fds[1]);
  for (pid_t pid : children) waitpid(pid, nullptr, 0);
  std::string report;
  char chunk[512];
  for (ssize_t n; (n = read(fds[0], chunk, sizeof(chunk))) > 0;) report.append(chunk, n);
  std::printf("| stages | transport | compute | poll | stage | p50 us | p90 us | p99 us |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  std::vector<std::string> lines;
  for (size_t at = 0, end; (end = report.find('\n', at)) != std::string::npos; at = end + 1) {
    lines.push_back(report.substr(at, end - at));
  }
  std::sort(lines.begin(), lines.end());
  for (const std::string& line : lines) {
    int stage = 0;
    long long p50 = 0, p90 = 0, p99 = 0;
    std::sscanf(line.c_str(), "%d %lld %lld %lld", &stage, &p50, &p90, &p99);
    std::printf("| %d | %s | %d us%s | %s | %d | %lld | %lld | %lld |\n", o.stages,
                o.transport.c_str(), o.compute_us,
                o.memory ? (o.nta ? " streaming memory (nta)" : " streaming memory") : " in cache",
                o.poll.c_str(), stage, p50, p90, p99);
  }
  if (!o.ipc_dir.empty()) {
    for (int stage = 0; stage < o.stages; ++stage) unlink(Endpoint(o, stage).substr(6).c_str());
    rmdir(o.ipc_dir.c_str());
  }
  return 0;
}
