// Who may join a cluster, and what they may hold (the permission-token issue, phase 2).
//
// With a key (--key DIR) the coordinator's control socket is a CurveZMQ server, and every
// worker proves who it is before it is welcomed:
// - a worker whose transport key the operator listed (--allow-keys, and the coordinator's own
//   key: local workers share it) is of the coordinator's origin, needs no token and may hold
//   any part of the model;
// - any other worker gets a Challenge after its Hello and must answer with a Proof: a
//   permission token from a trusted issuer (--trust, of the model owner's origin --owner) for
//   this model, this cluster (--audience) and host_shard, signed over the challenge by the
//   token's subject key (auth/admission.h). Its scope then bounds what the partitioner places
//   on it.
// Until admitted, a peer's messages other than Hello and Proof are dropped before they are
// decoded (auth/peer_gate.h). Admitted tokens are checked again every second: an expired or
// revoked one (--revocations, re-read when the file changes) drains its worker. --allow-keys is
// re-read when the file changes too (checked every second and at each unlisted hello): a key
// added is welcome at once, a worker whose key was taken off is drained.
//
// Without a key there is no CURVE and no token: every worker is welcome, which is only allowed
// on loopback addresses unless the operator says --insecure.
#ifndef SHARDRUN_COORDINATOR_ACCESS_CONTROL_H_
#define SHARDRUN_COORDINATOR_ACCESS_CONTROL_H_

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/admission.h"
#include "auth/file_stamp.h"
#include "auth/key_allow_list.h"
#include "auth/keys.h"
#include "auth/peer_gate.h"
#include "auth/revocation_list.h"
#include "auth/token_verifier.h"
#include "auth/zap_handler.h"
#include "model/content_hash.h"
#include "partitioner/shard_plan.h"
#include "proto/channel.h"
#include "proto/shardrun.pb.h"
#include "zmq.hpp"

namespace shardrun {

// The cluster's access flags.
struct AccessOptions {
  std::string key_dir;             // --key: `shardrun keygen` output (empty: no CURVE, no tokens)
  std::vector<std::string> trust;  // --trust: issuers' sign.pub files
  std::string allow_keys;          // --allow-keys FILE (auth/allowed_keys.h)
  std::string revocations;         // --revocations FILE (auth/revocation_list.h)
  std::string audience;            // --audience: this cluster's name
  std::string owner;               // --owner: the model owner's origin (default: the key's)
  bool insecure = false;           // --insecure: listen off loopback without CURVE
  std::chrono::seconds clock_skew{60};
};

// What the model is, for the checks tokens get.
struct AccessModel {
  Sha256 hash{};
  int n_layers = 0;
  int n_experts = 0;
  PartitionKind kind = PartitionKind::kLayer;
};

// A worker the coordinator may welcome: its transport key (none without CURVE) and scope.
struct AdmittedWorker {
  std::optional<auth::CurveKeyBytes> curve_key;
  auth::ShardScope scope;   // whole model for listed keys
  std::string description;  // for the log
};

class AccessControl {
 public:
  // Applies the listen rule (auth::CheckListenSecurity) to `listen` and, with a key, loads the
  // keys and lists and starts the ZAP handler in `context`, which must happen before any
  // socket of that context binds. Null without a key: everyone is welcome.
  static absl::StatusOr<std::unique_ptr<AccessControl>> Create(const AccessOptions& options,
                                                               const std::string& listen,
                                                               zmq::context_t& context,
                                                               const AccessModel& model);
  ~AccessControl();

  // Makes `control` (before bind) a CURVE server whose unadmitted peers are heard only for
  // their handshake.
  absl::Status SecureControlSocket(Channel& control);

  // What to answer a Hello (already checked for version, model file and budget).
  struct HelloAnswer {
    std::optional<AdmittedWorker> admitted;    // welcome it
    std::optional<wire::Challenge> challenge;  // or ask for its token
    std::string refusal;                       // or refuse it
  };
  HelloAnswer OnHello(const std::string& worker, const std::string& user_id,
                      const wire::Hello& hello);

  // Checks the answer to a challenge: the admitted worker and the Hello it registers with,
  // or the refusal (each reason its own message).
  absl::StatusOr<std::pair<wire::Hello, AdmittedWorker>> OnProof(const std::string& worker,
                                                                 const std::string& user_id,
                                                                 const wire::Proof& proof);

  // Workers whose admission stopped being valid (token expired or revoked, key taken off
  // --allow-keys), with the reason; each is forgotten (Forget) before it is returned. Checks
  // at most once per second.
  std::vector<std::pair<std::string, std::string>> TakeInvalidated();

  // Drops what is known about `worker`: its token-proved key leaves the allow list, so
  // nothing it sends is heard any more.
  void Forget(const std::string& worker);

  const auth::CurveKeyPair& keys() const { return keys_; }
  uint64_t dropped() const;  // messages dropped unheard on the control socket

 private:
  explicit AccessControl(const AccessModel& model);
  absl::Status Load(const AccessOptions& options);
  // Refused when the scope holds nothing this plan kind can place.
  absl::Status CheckPlaceable(const auth::ShardScope& scope) const;
  // Re-reads --allow-keys if the file changed: admits its keys, takes the others off the allow
  // list and queues their workers for TakeInvalidated. A file that no longer parses keeps the
  // keys read before (logged): an operator's typo must not drain the cluster.
  void RereadAllowedKeys();

  struct PendingHello {
    wire::Hello hello;
    Sha256 digest{};
    wire::Challenge challenge;
  };
  struct TokenWorker {
    auth::CurveKeyBytes key{};
    auth::TokenId token_id{};
    std::chrono::system_clock::time_point expires;
    AdmittedWorker admitted;
  };

  const AccessModel model_;
  auth::CurveKeyPair keys_;
  std::string allow_keys_path_;  // --allow-keys (empty: none)
  std::optional<auth::FileStamp> allow_keys_stamp_;
  std::vector<auth::CurvePublicKey> file_keys_;                   // as last read from it
  std::map<std::string, auth::CurveKeyBytes> by_listed_key_;      // workers admitted by a file key
  std::vector<std::pair<std::string, std::string>> invalidated_;  // for TakeInvalidated
  std::string origin_;
  std::shared_ptr<auth::KeyAllowList> allow_list_;
  std::shared_ptr<auth::RevocationList> revocations_;
  std::unique_ptr<auth::TokenVerifier> verifier_;
  std::unique_ptr<auth::Admission> admission_;
  std::unique_ptr<auth::ZapHandler> zap_;
  std::shared_ptr<auth::PeerGate> gate_;
  bool accepts_tokens_ = false;
  std::map<std::string, PendingHello> pending_;  // by worker id (routing id)
  std::map<std::string, TokenWorker> by_token_;  // admitted with a token, by worker id
  std::chrono::steady_clock::time_point last_check_;
};

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_ACCESS_CONTROL_H_
