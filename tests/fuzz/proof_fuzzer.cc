// libFuzzer target: the coordinator's hello proof handler (Admission::Admit) and the peer's
// answer to a challenge (MakeProof), on arbitrary Proof and Challenge messages.
//
// An input is parsed as a wire::Proof answering a challenge the fuzzer issued (its nonce is
// fixed, so that a seed proof signed ahead of time is valid and mutations reach every check),
// and as a wire::Challenge the fuzzer's peer answers. Besides crashes and sanitizer reports it
// checks that an admitted proof really is the subject's signature over this connection's
// transcript, that the same proof is refused a second time, and that a proof the peer makes
// echoes its challenge's nonce.
//
// With SHARDRUN_AUTH_SEEDS=DIR in the environment the binary instead writes its seed corpus
// (a valid proof, a proof with a broken signature, a challenge) into DIR and exits.
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "auth/admission.h"
#include "auth/encoding.h"
#include "auth/keys.h"
#include "auth/proof.h"
#include "auth/token_issuer.h"
#include "auth/token_verifier.h"
#include "spdlog/spdlog.h"

namespace shardrun::auth {
namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "proof_fuzzer: %s\n", what.c_str());
  std::abort();
}

const std::chrono::system_clock::time_point kNow(std::chrono::seconds(1704067200));
constexpr char kOwner[] = "https://owner.example";
constexpr char kPeer[] = "peer-1";

SignKeyPair FixedSignKey(const char* origin, uint8_t fill) {
  std::array<uint8_t, 32> seed;
  seed.fill(fill);
  return SignKeyPairFromSeed(origin, seed);
}

CurveKeyBytes FixedCurveKey(uint8_t fill) {
  CurveKeyBytes key;
  key.fill(fill);
  return key;
}

const SignKeyPair& Owner() {
  static const SignKeyPair key = FixedSignKey(kOwner, 1);
  return key;
}
const SignKeyPair& Worker() {
  static const SignKeyPair key = FixedSignKey("https://worker.example", 2);
  return key;
}
const CurveKeyBytes kCoordinatorCurve = FixedCurveKey(3);
const CurveKeyBytes kWorkerCurve = FixedCurveKey(4);

wire::Hello FixedHello() {
  wire::Hello hello;
  hello.set_protocol_version(wire::PROTOCOL_VERSION);
  hello.set_worker_id(kPeer);
  hello.mutable_budget()->set_memory_bytes(1 << 30);
  return hello;
}

const TokenVerifier& Verifier() {
  static const TokenVerifier verifier = [] {
    TrustPolicy policy;
    policy.trusted_issuers.push_back(Owner().Public());
    policy.audience = "cluster-1";
    return TokenVerifier(policy, [] { return kNow; });
  }();
  return verifier;
}

TokenUse HostShard() {
  TokenUse use;
  use.model_hash = HashBytes(AsBytes("model-a"));
  use.permission = Permission::kHostShard;
  use.model = ModelExtent{22, 0};
  return use;
}

// A fresh coordinator whose first challenge to kPeer has a fixed nonce.
std::unique_ptr<Admission> NewAdmission(wire::Challenge* challenge) {
  AdmissionOptions options;
  options.coordinator_origin = kOwner;
  options.coordinator_curve_key = kCoordinatorCurve;
  options.allow_list = std::make_shared<KeyAllowList>();
  options.nonce_source = [](std::span<uint8_t> nonce) {
    std::memset(nonce.data(), 0x5a, nonce.size());
  };
  auto admission = std::make_unique<Admission>(options, &Verifier());
  absl::StatusOr<wire::Challenge> issued = admission->IssueChallenge(kPeer);
  if (!issued.ok()) Fail("cannot issue a challenge");
  *challenge = *issued;
  return admission;
}

void FuzzProof(const wire::Proof& proof) {
  wire::Challenge challenge;
  std::unique_ptr<Admission> admission = NewAdmission(&challenge);
  const Sha256 digest = HelloDigest(FixedHello());
  absl::StatusOr<AdmittedPeer> admitted =
      admission->Admit(kPeer, digest, proof, HostShard(), kWorkerCurve);
  if (!admitted.ok()) return;
  absl::StatusOr<ParsedToken> token = ParseToken(proof.token());
  if (!token.ok()) Fail("admitted a proof whose token does not parse");
  ProofContext context;
  context.nonce = challenge.nonce();
  context.hello_digest = digest;
  context.coordinator_origin = kOwner;
  context.coordinator_curve_key = kCoordinatorCurve;
  context.peer_curve_key = kWorkerCurve;
  context.token = proof.token();
  if (!VerifySignature(token->claims.subject_key, AsBytes(ProofTranscript(context)),
                       AsBytes(proof.signature()))) {
    Fail("admitted a proof that is not the subject's signature over this connection");
  }
  if (admitted->origin != token->claims.subject_origin) Fail("admitted under another origin");
  if (admission->Admit(kPeer, digest, proof, HostShard(), kWorkerCurve).ok()) {
    Fail("admitted the same proof twice");
  }
}

const std::string& Token() {
  static const std::string token = [] {
    TokenRequest request;
    request.subject_origin = Worker().origin;
    request.subject_key = Worker().public_key;
    request.audience = "cluster-1";
    request.model_hash = HashBytes(AsBytes("model-a"));
    request.permissions.Add(Permission::kHostShard);
    request.not_before = kNow - std::chrono::minutes(1);
    request.ttl = std::chrono::hours(1);
    absl::StatusOr<std::string> t = IssueToken(Owner(), request);
    if (!t.ok()) Fail(std::string(t.status().message()));
    return *t;
  }();
  return token;
}

void FuzzChallenge(const wire::Challenge& challenge) {
  absl::StatusOr<wire::Proof> proof = MakeProof(challenge, HelloDigest(FixedHello()), Token(),
                                                Worker(), kCoordinatorCurve, kWorkerCurve);
  if (proof.ok() && proof->nonce() != challenge.nonce()) Fail("a proof names another nonce");
}

// ---- Seeds -----------------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> Seeds() {
  wire::Challenge challenge;
  NewAdmission(&challenge);
  absl::StatusOr<wire::Proof> proof = MakeProof(challenge, HelloDigest(FixedHello()), Token(),
                                                Worker(), kCoordinatorCurve, kWorkerCurve);
  if (!proof.ok()) Fail(std::string(proof.status().message()));
  std::vector<std::pair<std::string, std::string>> seeds;
  seeds.emplace_back("proof_valid", proof->SerializeAsString());
  wire::Proof broken = *proof;
  broken.mutable_signature()->at(7) ^= 1;
  seeds.emplace_back("proof_bad_signature", broken.SerializeAsString());
  seeds.emplace_back("challenge", challenge.SerializeAsString());
  return seeds;
}

void WriteSeeds(const char* dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) Fail(std::string("cannot create ") + dir);
  // The valid seed must be admitted, or the fuzzer would only explore refusals.
  wire::Proof valid;
  for (const auto& [name, input] : Seeds()) {
    if (name == "proof_valid") {
      wire::Challenge challenge;
      std::unique_ptr<Admission> admission = NewAdmission(&challenge);
      if (!valid.ParseFromString(input)) Fail("seed proof does not parse");
      absl::StatusOr<AdmittedPeer> admitted =
          admission->Admit(kPeer, HelloDigest(FixedHello()), valid, HostShard(), kWorkerCurve);
      if (!admitted.ok()) Fail("seed proof refused: " + std::string(admitted.status().message()));
    }
    const std::string path = std::string(dir) + "/" + name;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr || std::fwrite(input.data(), 1, input.size(), f) != input.size() ||
        std::fclose(f) != 0) {
      Fail("cannot write " + path);
    }
  }
}

}  // namespace
}  // namespace shardrun::auth

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  if (const char* dir = std::getenv("SHARDRUN_AUTH_SEEDS"); dir != nullptr) {
    shardrun::auth::WriteSeeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> buffer(data, data + size);  // exactly the input's size, for ASan
  shardrun::wire::Proof proof;
  if (proof.ParseFromArray(buffer.data(), static_cast<int>(buffer.size()))) {
    shardrun::auth::FuzzProof(proof);
  }
  shardrun::wire::Challenge challenge;
  if (challenge.ParseFromArray(buffer.data(), static_cast<int>(buffer.size()))) {
    shardrun::auth::FuzzChallenge(challenge);
  }
  return 0;
}
