// Running a MoE layer's experts on the workers that hold them (--type expert).
//
// Every worker binds one PULL socket, its expert endpoint, on which it receives both requests
// from layer owners and the replies to its own requests. As an ExpertDispatcher, the client
// sends each holder one request per layer with the rows its experts need, runs the calls it
// holds itself meanwhile, and waits for the replies, serving other workers' requests while it
// waits (two owners may be waiting on each other's experts in pipeline mode). Replicated
// experts are used in turn.
#ifndef SHARDRUN_WORKER_EXPERT_CLIENT_H_
#define SHARDRUN_WORKER_EXPERT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/expert_bank.h"
#include "engine/expert_dispatch.h"
#include "proto/channel.h"
#include "proto/shardrun.pb.h"
#include "worker/peer_security.h"
#include "zmq.hpp"

namespace shardrun {

class ExpertClient : public ExpertDispatcher {
 public:
  // Binds the expert socket on `bind`; `advertise_host` replaces the bound address in
  // endpoint() (empty: as bound). `security` (CURVE or not) must outlive the client.
  // Unless `links` is kNone (or CURVE is on), workers pass requests and replies through links
  // (proto/link.h): shared memory on one host, TCP between hosts.
  static absl::StatusOr<std::unique_ptr<ExpertClient>> Create(
      zmq::context_t& context, const std::string& name, const std::string& bind,
      const std::string& advertise_host, const PeerSecurity& security, LinkMode links);

  const std::string& endpoint() const { return endpoint_; }
  // Where peers reach it by link (Hello.expert_link_endpoint), or "".
  std::string link_endpoint() const { return in_.inbox() != nullptr ? in_.inbox()->address() : ""; }
  // What the worker's loop polls (the socket and the links) while idle.
  Channel& channel() { return in_; }

  // Takes the expert map of `assign`; `bank` (may be null) holds this worker's experts and
  // must outlive the client's use.
  absl::Status Configure(const wire::Assign& assign, ExpertBank* bank, int dim,
                         absl::Duration deadline);

  absl::Status Run(int layer, std::span<const ExpertCall> calls, std::span<const float> inputs,
                   std::span<float> outputs) override;

  // Answers every request queued on the socket (the worker's loop calls this when idle).
  void ServeQueued();

  // The device failure (kernels/device_failure.h) met while serving another worker's request,
  // if any, cleared: the requester got an error reply, and this worker must leave.
  absl::Status TakeDeviceFailure();

  // Testing (worker/fault_injection.h): called with each request's number (from 1) before it
  // is served.
  void set_before_serve(std::function<void(uint64_t)> hook) { before_serve_ = std::move(hook); }

  // Appends the calls sent to each plan worker (this one included) since the last call to
  // `counts`, and starts counting again.
  void TakeCallCounts(google::protobuf::RepeatedField<int64_t>* counts);

 private:
  ExpertClient(zmq::context_t& context, const std::string& name, const PeerSecurity& security);
  // Handles the message just received: serves a request, or files a reply of the run under way.
  void HandleMessage();
  absl::Status Serve(const wire::ExpertRequest& request, std::span<const uint8_t> rows);
  Channel* Peer(int worker);

  zmq::context_t& context_;
  std::string name_;
  const PeerSecurity& security_;
  Channel in_;
  std::string endpoint_;
  ExpertBank* bank_ = nullptr;
  int dim_ = 0;
  int self_ = 0;
  absl::Duration deadline_ = absl::Seconds(30);
  int n_experts_ = 0;
  std::vector<std::vector<int>> holders_;    // [layer * n_experts + expert] -> plan workers
  std::vector<uint32_t> turn_;               // next replica to use, per expert
  std::vector<std::string> endpoints_;       // expert endpoint of each plan worker
  std::vector<std::string> curve_keys_;      // their transport keys (with CURVE)
  std::vector<std::string> link_endpoints_;  // their links ("" where none)
  LinkMode links_ = LinkMode::kNone;
  std::vector<std::unique_ptr<Channel>> peers_;  // connected on first use
  std::vector<int64_t> call_counts_;

  // The run under way: for each worker, the calls it was sent (indices into the run's calls).
  struct Pending {
    uint64_t request_id = 0;
    std::vector<size_t> calls;
    bool answered = true;
  };
  std::vector<Pending> pending_;
  std::span<float> run_outputs_;
  std::string run_error_;
  uint64_t next_request_ = 1;
  std::vector<float> rows_;    // rows gathered for one request
  std::vector<float> served_;  // outputs of a request served here
  uint64_t requests_served_ = 0;
  absl::Status device_failure_;
  std::function<void(uint64_t)> before_serve_;
  wire::Envelope out_;
};

}  // namespace shardrun

#endif  // SHARDRUN_WORKER_EXPERT_CLIENT_H_
