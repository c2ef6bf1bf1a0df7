#include "coordinator/access_control.h"

#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "auth/allowed_keys.h"
#include "auth/clock.h"
#include "auth/curve.h"
#include "auth/encoding.h"
#include "auth/key_file.h"
#include "auth/origin.h"
#include "auth/proof.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

std::optional<auth::CurveKeyBytes> KeyFromUserId(const std::string& user_id) {
  if (user_id.empty()) return std::nullopt;
  absl::StatusOr<std::string> bytes = auth::Z85DecodeKey(user_id);
  if (!bytes.ok()) return std::nullopt;
  auth::CurveKeyBytes key;
  std::memcpy(key.data(), bytes->data(), key.size());
  return key;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AccessControl>> AccessControl::Create(const AccessOptions& options,
                                                                     const std::string& listen,
                                                                     zmq::context_t& context,
                                                                     const AccessModel& model) {
  const bool curve = !options.key_dir.empty();
  if (absl::Status s = auth::CheckListenSecurity(listen, curve, options.insecure); !s.ok()) {
    return s;
  }
  if (options.insecure) {
    spdlog::warn("--insecure: {}",
                 curve ? "has no effect with --key (CURVE is on)"
                       : "peers are not authenticated and traffic is not encrypted; "
                         "anyone who can reach the listen address may join");
  }
  if (!curve) {
    const bool needs_key = !options.trust.empty() || !options.allow_keys.empty() ||
                           !options.revocations.empty() || !options.audience.empty() ||
                           !options.owner.empty();
    if (needs_key) {
      return absl::InvalidArgumentError(
          "--trust, --allow-keys, --revocations, --audience and --owner need --key DIR: "
          "workers are admitted by the CURVE transport key they connect with");
    }
    return std::unique_ptr<AccessControl>();
  }
  std::unique_ptr<AccessControl> access(new AccessControl(model));
  if (absl::Status s = access->Load(options); !s.ok()) return s;
  auto zap = auth::ZapHandler::Start(context, access->allow_list_);
  if (!zap.ok()) return zap.status();
  access->zap_ = *std::move(zap);
  // Strangers reach the control socket to present a token; the gate hears only that from them.
  access->zap_->AdmitAnyKeyInDomain(auth::kHandshakeDomain);
  return access;
}

AccessControl::AccessControl(const AccessModel& model)
    : model_(model), allow_list_(std::make_shared<auth::KeyAllowList>()) {}

AccessControl::~AccessControl() = default;

absl::Status AccessControl::Load(const AccessOptions& options) {
  const auth::KeyDirectory paths = auth::KeyPaths(options.key_dir);
  absl::StatusOr<auth::CurveKeyPair> keys = auth::LoadCurveSecretKey(paths.curve_secret);
  if (!keys.ok()) return keys.status();
  keys_ = *std::move(keys);
  origin_ = keys_.origin;
  const std::string owner = options.owner.empty() ? origin_ : options.owner;
  if (absl::Status s = auth::ValidateOrigin(owner); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--owner: ", std::string(s.message())));
  }
  auth::TrustPolicy policy;
  for (const std::string& path : options.trust) {
    absl::StatusOr<auth::SignPublicKey> issuer = auth::LoadSignPublicKey(path);
    if (!issuer.ok()) return issuer.status();
    // Only the model owner may let others hold its model.
    if (issuer->origin != owner) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--trust ", path, " is a key of ", issuer->origin, ", not of the model owner ", owner,
          options.owner.empty() ? " (the origin of --key; --owner names another)" : " (--owner)"));
    }
    policy.trusted_issuers.push_back(*std::move(issuer));
  }
  accepts_tokens_ = !policy.trusted_issuers.empty();
  policy.audience = options.audience;
  if (!options.audience.empty()) {
    if (absl::Status s = auth::ValidateAudience(options.audience); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--audience: ", std::string(s.message())));
    }
  }
  policy.clock_skew = options.clock_skew;
  if (!options.revocations.empty()) {
    revocations_ = std::make_shared<auth::RevocationList>(options.revocations);
    // It fails closed; a list that is broken from the start is an operator's error to fix now.
    if (absl::Status s = revocations_->Refresh(); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--revocations: ", std::string(s.message())));
    }
    policy.revocations = revocations_;
  }
  verifier_ = std::make_unique<auth::TokenVerifier>(std::move(policy));

  auth::AdmissionOptions admission;
  admission.coordinator_origin = origin_;
  admission.coordinator_curve_key = keys_.public_key;
  // Same-origin workers: the operator's list, and the coordinator's own key (local workers
  // share its key directory).
  admission.listed_keys.push_back(keys_.Public());
  if (!options.allow_keys.empty()) {
    allow_keys_path_ = options.allow_keys;
    allow_keys_stamp_ =
        auth::StampOf(allow_keys_path_);  // before the read: an edit during it counts
    absl::StatusOr<std::vector<auth::CurvePublicKey>> listed =
        auth::LoadAllowedKeys(options.allow_keys);
    if (!listed.ok()) return listed.status();
    file_keys_ = *listed;
    admission.listed_keys.insert(admission.listed_keys.end(), listed->begin(), listed->end());
  }
  for (const auth::CurvePublicKey& key : admission.listed_keys) {
    allow_list_->Add(key.key, key.origin);
  }
  admission.allow_list = allow_list_;
  admission_ = std::make_unique<auth::Admission>(std::move(admission), verifier_.get());
  spdlog::info("CURVE on: coordinator key {} ({}), {} listed key(s), {}", keys_.Public().Z85(),
               origin_, allow_list_->size(),
               accepts_tokens_ ? absl::StrCat(verifier_->policy().trusted_issuers.size(),
                                              " trusted issuer(s) of ", owner)
                               : std::string("no tokens accepted (no --trust)"));
  return absl::OkStatus();
}

absl::Status AccessControl::SecureControlSocket(Channel& control) {
  if (absl::Status s =
          auth::ConfigureCurveServer(control.socket(), keys_, *zap_, auth::kHandshakeDomain);
      !s.ok()) {
    return s;
  }
  gate_ = std::make_shared<auth::PeerGate>(allow_list_, /*handshake_socket=*/true);
  control.set_peer_filter(
      [gate = gate_](const zmq::message_t& first, size_t frames) -> absl::StatusOr<PeerAccess> {
        absl::StatusOr<auth::PeerStanding> standing =
            gate->Check(auth::PeerCurveKey(first), frames, first.size());
        if (!standing.ok()) return standing.status();
        return *standing == auth::PeerStanding::kAdmitted ? PeerAccess::kFull
                                                          : PeerAccess::kHandshakeOnly;
      });
  return absl::OkStatus();
}

uint64_t AccessControl::dropped() const { return gate_ ? gate_->dropped() : 0; }

AccessControl::HelloAnswer AccessControl::OnHello(const std::string& worker,
                                                  const std::string& user_id,
                                                  const wire::Hello& hello) {
  HelloAnswer answer;
  const std::optional<auth::CurveKeyBytes> key = KeyFromUserId(user_id);
  if (!key) {
    answer.refusal = "the connection carries no CURVE transport key";
    return answer;
  }
  if (!allow_list_->Contains(*key, verifier_->Now())) RereadAllowedKeys();  // just added?
  if (absl::StatusOr<auth::AdmittedPeer> listed = admission_->AdmitListedKey(*key); listed.ok()) {
    answer.admitted = AdmittedWorker{key, auth::ShardScope(), listed->ToString()};
    if (*key != keys_.public_key) by_listed_key_[worker] = *key;
    return answer;
  }
  // A worker that proved its token and says hello again (a restart, a new coordinator plan)
  // keeps its admission while the token is valid and its key listed.
  if (auto it = by_token_.find(worker); it != by_token_.end() && it->second.key == *key &&
                                        allow_list_->Contains(*key, verifier_->Now())) {
    answer.admitted = it->second.admitted;
    return answer;
  }
  if (!accepts_tokens_) {
    answer.refusal = absl::StrCat("transport key ", auth::Z85EncodeKey(*key),
                                  " is not listed (--allow-keys) and this coordinator accepts "
                                  "no permission tokens (no --trust)");
    return answer;
  }
  const Sha256 digest = auth::HelloDigest(hello);
  // The same Hello again (a worker resends it until answered): the same challenge, so that a
  // proof already on its way stays valid.
  if (auto it = pending_.find(worker);
      it != pending_.end() && it->second.digest == digest &&
      auth::UnixMillis(verifier_->Now()) < it->second.challenge.expires_at_ms()) {
    answer.challenge = it->second.challenge;
    return answer;
  }
  absl::StatusOr<wire::Challenge> challenge = admission_->IssueChallenge(worker);
  if (!challenge.ok()) {
    answer.refusal = std::string(challenge.status().message());
    return answer;
  }
  pending_[worker] = PendingHello{hello, digest, *challenge};
  answer.challenge = *std::move(challenge);
  return answer;
}

absl::StatusOr<std::pair<wire::Hello, AdmittedWorker>> AccessControl::OnProof(
    const std::string& worker, const std::string& user_id, const wire::Proof& proof) {
  auto pending = pending_.find(worker);
  if (pending == pending_.end()) {
    return absl::FailedPreconditionError("a proof without a hello: say hello first");
  }
  const PendingHello hello = std::move(pending->second);
  pending_.erase(pending);
  auth::TokenUse use;
  use.model_hash = model_.hash;
  use.permission = auth::Permission::kHostShard;
  use.model = auth::ModelExtent{model_.n_layers, model_.n_experts};
  absl::StatusOr<auth::AdmittedPeer> peer =
      admission_->Admit(worker, hello.digest, proof, use, KeyFromUserId(user_id));
  if (!peer.ok()) return peer.status();
  // Admission put the key on the allow list; every refusal below takes it off again.
  auto refuse = [&](absl::Status status) {
    if (peer->curve_key) allow_list_->Remove(*peer->curve_key);
    spdlog::warn("refused peer {}: {}", worker, std::string(status.message()));
    return status;
  };
  if (!peer->curve_key) return refuse(absl::UnauthenticatedError("no transport key"));
  if (peer->expires <= verifier_->Now()) {
    // Within the clock skew the verifier tolerates, but already over: nothing to hold.
    return refuse(absl::PermissionDeniedError(
        absl::StrCat("token expired at ", auth::FormatUnixTime(auth::UnixSeconds(peer->expires)))));
  }
  if (absl::Status s = CheckPlaceable(peer->scope); !s.ok()) return refuse(s);
  absl::StatusOr<std::string> id = auth::HexDecode(peer->token_id);
  if (!id.ok() || id->size() != auth::kTokenIdBytes) {
    return refuse(absl::InternalError("admitted token has a malformed id"));
  }
  TokenWorker& entry = by_token_[worker];
  entry.key = *peer->curve_key;
  std::memcpy(entry.token_id.data(), id->data(), entry.token_id.size());
  entry.expires = peer->expires;
  entry.admitted = AdmittedWorker{peer->curve_key, peer->scope, peer->ToString()};
  return std::make_pair(hello.hello, entry.admitted);
}

absl::Status AccessControl::CheckPlaceable(const auth::ShardScope& scope) const {
  if (model_.kind == PartitionKind::kExpert) return absl::OkStatus();  // layers or experts
  // Other plans place whole layers, with all their experts on a MoE model.
  for (int layer = 0; layer < model_.n_layers; ++layer) {
    const ModelSlice one_layer(false, {layer, layer + 1}, false);
    if (ScopeAllowsSlice(scope, one_layer, model_.n_experts)) return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("scope holds nothing a --type ", std::string(PartitionKindName(model_.kind)),
                   " plan can place: ", scope.ToString(), " (such plans place whole layers",
                   model_.n_experts > 0 ? ", each with all its experts" : "", ")"));
}

void AccessControl::RereadAllowedKeys() {
  if (allow_keys_path_.empty()) return;
  const std::optional<auth::FileStamp> stamp = auth::StampOf(allow_keys_path_);
  if (stamp == allow_keys_stamp_) return;
  allow_keys_stamp_ = stamp;
  absl::StatusOr<std::vector<auth::CurvePublicKey>> read = auth::LoadAllowedKeys(allow_keys_path_);
  if (!read.ok()) {
    spdlog::error("--allow-keys {}: {}; keeping the {} key(s) read before", allow_keys_path_,
                  std::string(read.status().message()), file_keys_.size());
    return;
  }
  std::set<auth::CurveKeyBytes> now;
  for (const auth::CurvePublicKey& key : *read) now.insert(key.key);
  int removed = 0;
  for (const auth::CurvePublicKey& key : file_keys_) {
    if (now.contains(key.key) || key.key == keys_.public_key) continue;
    allow_list_->Remove(key.key);
    ++removed;
  }
  for (const auto& [worker, key] : by_listed_key_) {
    if (now.contains(key)) continue;
    invalidated_.emplace_back(worker,
                              absl::StrCat("its transport key ", auth::Z85EncodeKey(key),
                                           " was taken off --allow-keys ", allow_keys_path_));
  }
  // A key that was also proved with a token stays allowed while the token is valid.
  for (const auto& [worker, entry] : by_token_) {
    allow_list_->Add(entry.key, entry.admitted.description, entry.expires);
  }
  std::vector<auth::CurvePublicKey> listed = {keys_.Public()};
  for (const auth::CurvePublicKey& key : *read) {
    allow_list_->Add(key.key, key.origin);
    listed.push_back(key);
  }
  admission_->SetListedKeys(std::move(listed));
  spdlog::info("--allow-keys {}: re-read, {} key(s), {} taken off", allow_keys_path_, read->size(),
               removed);
  file_keys_ = *std::move(read);
}

std::vector<std::pair<std::string, std::string>> AccessControl::TakeInvalidated() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_check_ < std::chrono::seconds(1)) return {};
  last_check_ = now;
  RereadAllowedKeys();
  std::vector<std::pair<std::string, std::string>> invalid = std::move(invalidated_);
  invalidated_.clear();
  const auto wall = verifier_->Now();
  for (const auto& [worker, entry] : by_token_) {
    if (wall >= entry.expires) {
      invalid.emplace_back(worker,
                           absl::StrCat("its permission token expired at ",
                                        auth::FormatUnixTime(auth::UnixSeconds(entry.expires))));
    } else if (revocations_) {
      // Re-reads the file only when it changed.
      if (absl::Status s = revocations_->Check(entry.token_id); !s.ok()) {
        invalid.emplace_back(worker, std::string(s.message()));
      }
    }
  }
  for (const auto& [worker, why] : invalid) Forget(worker);
  return invalid;
}

void AccessControl::Forget(const std::string& worker) {
  pending_.erase(worker);
  by_listed_key_.erase(worker);
  admission_->Forget(worker);
  if (auto it = by_token_.find(worker); it != by_token_.end()) {
    allow_list_->Remove(it->second.key);
    by_token_.erase(it);
  }
}

}  // namespace shardrun
