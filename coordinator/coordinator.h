// The coordinator: registers workers, plans the partition, places the shards and drives
// forward passes through the stages.
//
// One ROUTER socket carries every control message (hello, assign, load progress, heartbeats,
// logits). Activations travel peer to peer between stages; the coordinator sends token ids to
// the first stage and receives logits from the last, so a token costs one hop per stage.
#ifndef SHARDRUN_COORDINATOR_COORDINATOR_H_
#define SHARDRUN_COORDINATOR_COORDINATOR_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "auth/keys.h"
#include "coordinator/access_control.h"
#include "coordinator/latency_window.h"
#include "coordinator/weight_streamer.h"
#include "model/content_hash.h"
#include "model/model_file.h"
#include "partitioner/model_shape.h"
#include "partitioner/shard_plan.h"
#include "proto/arrival_spin.h"
#include "proto/channel.h"
#include "proto/envelope_arena.h"
#include "proto/link.h"
#include "proto/shardrun.pb.h"

namespace shardrun {

struct CoordinatorOptions {
  std::string listen = "tcp://127.0.0.1:0";  // port 0: any free port (see endpoint())
  int expected_workers = 1;
  std::vector<std::string> expected_ids;  // locally started workers, for "who is missing"
  absl::Duration register_timeout = absl::Seconds(30);
  absl::Duration load_timeout = absl::Minutes(10);
  absl::Duration step_timeout = absl::Seconds(60);
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  // A plan worker silent this long is declared dead (so is one whose step is late past
  // step_timeout, or that says it is leaving).
  absl::Duration worker_timeout = absl::Seconds(2);
  // Workers exit when they hear nothing from the coordinator for this long.
  absl::Duration coordinator_timeout = absl::Seconds(10);
  // How the coordinator awaits logits (proto/arrival_spin.h); resolve kAuto before.
  PollMode poll = PollMode::kBlock;
  // Pass token ids to the first stage and take logits from the last by link (proto/link.h:
  // shared memory on this host, TCP to another) rather than socket; never with access control.
  LinkMode links = LinkMode::kAuto;
  // Registered workers kept out of the plan to replace a dead one at once.
  int spares = 0;
  // Recovery: how long to wait for a worker able to hold a lost shard before giving up on the
  // steps in flight (zero: no recovery, a lost worker fails the run).
  absl::Duration recovery_timeout = absl::Seconds(60);
  // Move layer boundaries when a stage is persistently slower (coordinator/load_balance.cc).
  bool rebalance = true;
  PartitionKind kind = PartitionKind::kLayer;
  int context_length = 0;  // 0: the model's
  int max_batch = 64;
  int max_sequences = 1;
  wire::ActivationType activation_type = wire::ACTIVATION_F32;
  int tensor_parallel = 0;  // kTensor: workers per stage (0 = all)
  ReductionPath reduction = ReductionPath::kAllToAll;
  // kExpert: calls per expert on a calibration text, [layer][expert] (empty: none).
  std::vector<std::vector<double>> expert_load;
  // Keys, tokens and CURVE (coordinator/access_control.h); none by default.
  AccessOptions access;
};

// A registered worker.
struct WorkerInfo {
  WorkerBudget budget;
  // Where it takes activations, partial sums (tensor parallelism) and expert requests, and
  // the links to each (proto/link.h; "" where it offers none).
  std::string data_endpoint;
  std::string link_endpoint;
  std::string reduce_endpoint;
  std::string reduce_link_endpoint;
  std::string expert_endpoint;
  std::string expert_link_endpoint;
  // With CURVE: the transport key it connected with, which its peers must know (Assign).
  std::optional<auth::CurveKeyBytes> curve_key;
  std::string simd_level;
  int pid = 0;
  bool has_model_file = false;
  absl::Time last_heard;
  // When a send to it last failed because its connection is gone (a killed process closes
  // its sockets at once), or InfinitePast.
  absl::Time unreachable_since = absl::InfinitePast();
  int64_t step_time_us = 0;
};

// Compute time per stage accumulated over the steps of a run.
struct StageTimes {
  int64_t steps = 0;
  int64_t compute_us = 0;
  int64_t sync_us = 0;       // tensor parallelism: part of compute_us spent adding partial sums
  int64_t sync_bytes = 0;    // partial-sum bytes one member sent
  int64_t sync_by_link = 0;  // partial sums rank 0 took through a link
  // Latency of the hop into this stage, one sample per step: one-token (decode) steps, whose
  // hidden state is one row, and batched (prefill) steps apart, whose rows make it longer.
  LatencyWindow hop_us;
  int64_t batch_hops = 0;
  int64_t batch_hop_max_us = 0;
  int64_t local_link_hops = 0;        // of those, hops through shared memory (proto/local_link.h)
  int64_t tcp_link_hops = 0;          // and through a TCP link (proto/tcp_link.h)
  std::vector<int64_t> expert_calls;  // expert plans: calls this stage sent to each plan worker
  int64_t decode_steps = 0;           // one-token steps, and their compute time (load balancing)
  int64_t decode_compute_us = 0;
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(const CoordinatorOptions& options,
                                                             const ModelFile& model);
  ~Coordinator();

  // The control endpoint workers connect to (with the real port when listening on port 0).
  const std::string& endpoint() const { return endpoint_; }

  // Accepts registrations until `expected_workers` are in, or fails after the timeout with
  // a message naming who is missing.
  absl::Status WaitForWorkers();
  // Plans over the registered workers.
  absl::StatusOr<ShardPlan> Plan() const;
  // Assigns every shard, streams load progress to the log, waits until all are loaded.
  absl::Status Deploy(const ShardPlan& plan);
  // Deploy, and when a worker is lost while loading, recover as during generation.
  absl::Status DeployWithRecovery(const ShardPlan& plan);

  // One forward pass of `tokens` at pos0.. of sequence `sequence_id` through the stages;
  // writes the last token's logits.
  absl::Status Forward(uint64_t sequence_id, int pos0, std::span<const int32_t> tokens,
                       std::span<float> logits);
  // The same split in two, so that several sequences can be in flight at once (pipeline
  // mode): Submit sends the step, whose logits land in `logits` (which must stay valid);
  // WaitAny returns a sequence whose submitted step has completed.
  absl::Status Submit(uint64_t sequence_id, int pos0, std::span<const int32_t> tokens,
                      std::span<float> logits);
  absl::StatusOr<uint64_t> WaitAny();
  // Frees the sequence's KV caches on every worker (and the tokens kept to rebuild them).
  void EndSequence(uint64_t sequence_id);
  // Recoveries so far (each re-planned, reloaded and replayed every live sequence).
  int recoveries() const { return recoveries_; }
  int rebalances() const { return rebalances_; }
  // Tells every worker to exit.
  void Shutdown(const std::string& reason);

  const std::map<std::string, WorkerInfo>& workers() const { return workers_; }
  const std::vector<StageTimes>& stage_times() const { return stage_times_; }
  // Decode steps (one token) seen so far: wall time from submission to logits, and the part
  // of it the stages spent computing; the rest is transport and waiting.
  struct DecodeSplit {
    int64_t steps = 0;
    int64_t wall_us = 0;
    int64_t compute_us = 0;
  };
  const DecodeSplit& decode_split() const { return decode_split_; }
  // Latency of the hop from the last stage back to the coordinator, one sample per step.
  const LatencyWindow& return_hop_us() const { return return_hop_us_; }
  const ShardPlan& plan() const { return plan_; }
  const ModelFile& model() const { return model_; }
  const CoordinatorOptions& options() const { return options_; }
  int context_length() const;

 private:
  Coordinator(const CoordinatorOptions& options, const ModelFile& model, zmq::context_t context);
  // Handles messages for up to `timeout`; returns after the first batch.
  void Pump(absl::Duration timeout);
  // --- Recovery (coordinator/recovery.cc) ---
  // Plan workers that are gone, silent past worker_timeout, or (with `step_late`) everyone
  // whose step is overdue. Empty when all is well.
  std::vector<std::string> LostWorkers() const;
  // Whether `worker`'s connection is gone and it has said nothing since: a killed process (a
  // network blip reconnects, and the worker speaks again within a heartbeat).
  bool Unreachable(const WorkerInfo& worker, absl::Time now) const;
  // After a failure (`why`): declares `lost` dead, re-plans over the survivors and any spare
  // or newly joined worker (waiting for one up to recovery_timeout), reloads, rebuilds every
  // live sequence's KV cache by replaying its tokens, and resubmits the steps in flight.
  absl::Status Recover(const std::string& why, const std::vector<std::string>& lost);
  // Between tokens (nothing in flight): re-plans with measured worker speeds when a stage is
  // persistently the bottleneck and the new split is clearly faster; replays the sequences.
  absl::Status MaybeRebalance();
  // Runs tokens [0, end) of `sequence` through the stages, discarding the logits.
  absl::Status Replay(uint64_t sequence, int end);
  // Waits for the one step in flight, without recovery.
  absl::Status WaitForStep(uint64_t sequence);
  void HandleHello(const std::string& sender, const wire::Hello& hello);
  void HandleProof(const std::string& sender, const wire::Proof& proof);
  // Why a Hello cannot be accepted now (version, identity, model file, budget, recent
  // failures), or empty; sets `retry_after` when it may try again later.
  std::string HelloRefusal(const std::string& sender, const wire::Hello& hello,
                           absl::Duration* retry_after) const;
  // Registers `sender` and welcomes it.
  void Register(const std::string& sender, const wire::Hello& hello,
                const AdmittedWorker& admitted);
  // Sends a Welcome: accepted when `refusal` is empty.
  void SendWelcome(const std::string& sender, const std::string& refusal,
                   absl::Duration retry_after = absl::ZeroDuration());
  // Drains the workers whose permission token expired or was revoked: they are lost to the
  // plan (recovery re-plans without them) and told why.
  void DrainInvalidTokens();
  // With CURVE: a worker's transport key as Assign carries it (empty without CURVE), and for
  // each plan worker the keys of the peers that connect to its sockets.
  std::string CurveKeyOf(const std::string& worker) const;
  std::map<std::string, std::set<std::string>> InboundKeys(const ShardPlan& plan) const;
  void SendHeartbeats();
  absl::Status CheckWorkersAlive() const;
  void Send(const std::string& worker, const wire::Envelope& envelope,
            std::span<const std::span<const uint8_t>> tensors = {});

  CoordinatorOptions options_;
  const ModelFile& model_;
  Sha256 model_hash_{};
  zmq::context_t context_;
  // Before control_: its ZAP handler must outlive the socket, and the context outlive both.
  std::unique_ptr<AccessControl> access_;
  Channel control_;
  std::string endpoint_;
  std::map<std::string, WorkerInfo> workers_;
  ShardPlan plan_;
  std::vector<std::string> plan_worker_ids_;  // of plan_
  uint64_t plan_id_ = 0;
  // Worker ids of each stage's members, in rank order (one per stage but for tensor plans).
  std::vector<std::vector<std::string>> stage_members_;
  // The first logits row each member of the last stage computes, in rank order.
  std::vector<int> logits_parts_;
  // Per-worker load state during Deploy.
  std::map<std::string, wire::LoadProgress> loads_;
  // Workers without the model file: the ranges their Assign offered, and their streams.
  std::map<std::string, std::vector<wire::FileRange>> offered_;
  WeightStreamer streamer_;
  // Submitted steps whose logits have not arrived, by sequence (one step per sequence at a
  // time), and sequences whose logits have arrived but were not yet returned by WaitAny.
  struct PendingStep {
    uint64_t step = 0;
    std::span<float> logits;
    int n_tokens = 0;
    absl::Time submitted;
    uint64_t parts_received = 0;  // bit i: the part of logits_parts_[i] arrived
    int pos0 = 0;                 // the step's tokens are history_[sequence][pos0 ..]
  };
  // Files one part of a step's logits; true when the step is complete.
  bool AcceptLogits(PendingStep& pending, const wire::Logits& logits,
                    std::span<const uint8_t> frame);
  // Every worker the deployed plan uses, once each (checked on every wait: kept, not rebuilt).
  const std::vector<std::string>& PlanWorkerIds() const { return plan_worker_ids_; }
  void SetPlan(const ShardPlan& plan);
  // Sends the activation of a step: tokens [pos0, pos0 + n) of the sequence's history.
  void SendStep(uint64_t sequence_id, const PendingStep& step);
  // Files the logits of a step (any part of them) that arrived by socket or link.
  void HandleLogits(const wire::Logits& logits, std::span<const uint8_t> frame);
  // Links to the first stage's members (in stage_members_[0] order; null: by socket).
  std::vector<std::unique_ptr<LinkOutlet>> step_links_;
  std::string link_header_;         // a step's encoded envelope, reused
  std::vector<Frame> link_frames_;  // and its frames
  // By sequence. A flat hash map: a step's entry comes and goes without allocating.
  absl::flat_hash_map<uint64_t, PendingStep> pending_;
  std::deque<uint64_t> completed_;
  std::string worker_error_;
  // Every token each live sequence has been fed, by position: what rebuilds its KV caches.
  std::map<uint64_t, std::vector<int32_t>> history_;
  // Workers declared dead: how often, and until when a new hello from them is refused.
  struct Failures {
    int count = 0;
    absl::Time refused_until = absl::InfinitePast();
  };
  std::map<std::string, Failures> failures_;
  int recoveries_ = 0;
  // Plan workers that registered again as a new process: their shard is lost.
  std::set<std::string> replaced_;
  // Plan workers whose permission token expired or was revoked: their shard is lost.
  std::set<std::string> drained_;
  int rebalances_ = 0;
  int imbalanced_windows_ = 0;  // load balancing: windows in a row with a slow stage
  // Load balancing: each worker's measured speed (bytes read per us), which replaces its
  // declared capacity in plans; and each stage's (decode steps, compute us) at the last look.
  std::map<std::string, double> measured_speed_;
  std::vector<std::pair<int64_t, int64_t>> balance_mark_;
  bool recovering_ = false;
  uint64_t next_step_ = 1;
  std::vector<StageTimes> stage_times_;
  LatencyWindow return_hop_us_;
  ArrivalSpin logits_arrivals_{options_.poll};
  DecodeSplit decode_split_;
  absl::Time last_heartbeat_ = absl::InfinitePast();
  wire::Envelope out_;
  EnvelopeArena step_out_;  // the activations of steps (SendStep)
};

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_COORDINATOR_H_
