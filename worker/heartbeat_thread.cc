#include "worker/heartbeat_thread.h"

#include <chrono>

#include "absl/time/clock.h"
#include "proto/message_codec.h"
#include "proto/shardrun.pb.h"
#include "spdlog/spdlog.h"

namespace shardrun {

std::string HeartbeatId(const std::string& worker_id) { return worker_id + "#hb"; }

HeartbeatThread::HeartbeatThread(zmq::context_t& context, std::string connect,
                                 std::string worker_id, absl::Duration interval,
                                 const PeerSecurity& security)
    : context_(context),
      connect_(std::move(connect)),
      worker_id_(std::move(worker_id)),
      interval_(interval),
      security_(security),
      thread_([this] { Run(); }) {}

HeartbeatThread::~HeartbeatThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void HeartbeatThread::Run() {
  try {
    zmq::socket_t socket(context_, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::routing_id, HeartbeatId(worker_id_));
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::sndhwm, 4);  // beats that cannot go out are worthless later
    if (absl::Status s = security_.SecureCoordinatorClient(socket); !s.ok()) {
      spdlog::error("worker {}: heartbeat thread: {}", worker_id_, std::string(s.message()));
      return;
    }
    socket.connect(connect_);
    wire::Envelope envelope;
    std::string bytes;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      envelope.Clear();
      envelope.set_protocol_version(wire::PROTOCOL_VERSION);
      envelope.mutable_heartbeat()->set_sent_at_us(absl::ToUnixMicros(absl::Now()));
      envelope.mutable_heartbeat()->set_step_time_us(step_time_us_.load());
      envelope.SerializeToString(&bytes);
      (void)socket.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
      wake_.wait_for(lock, std::chrono::microseconds(absl::ToInt64Microseconds(interval_)));
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("worker {}: heartbeat thread: {}", worker_id_, e.what());
  }
}

}  // namespace shardrun
