// libFuzzer target: the token parser and verifier, and the scope, permission, duration and
// origin parsers, on arbitrary text.
//
// Besides crashes and sanitizer reports it checks what must hold for every accepted input:
// a parsed token re-encodes to exactly its input (one token has one text form), a scope
// prints and re-parses to itself and survives its wire form, and a verified token is one the
// trusted key signed.
//
// With SHARDRUN_AUTH_SEEDS=DIR in the environment the binary instead writes its seed corpus
// (tokens signed by the fixed key this fuzzer trusts, so that mutations reach every check of
// the verifier) into DIR and exits; the ctest in tests/fuzz/CMakeLists.txt does that first.
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "auth/encoding.h"
#include "auth/keys.h"
#include "auth/origin.h"
#include "auth/permission.h"
#include "auth/scope.h"
#include "auth/token_codec.h"
#include "auth/token_issuer.h"
#include "auth/token_verifier.h"
#include "spdlog/spdlog.h"

namespace shardrun::auth {
namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "token_fuzzer: %s\n", what.c_str());
  std::abort();
}

const std::chrono::system_clock::time_point kNow(std::chrono::seconds(1704067200));

const SignKeyPair& Owner() {
  static const SignKeyPair owner = [] {
    std::array<uint8_t, 32> seed;
    seed.fill(1);
    return SignKeyPairFromSeed("https://owner.example", seed);
  }();
  return owner;
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

void FuzzToken(std::string_view text) {
  absl::StatusOr<ParsedToken> token = ParseToken(text);
  if (!token.ok()) return;
  if (EncodeToken(token->payload_bytes, token->signature) != text) {
    Fail("a parsed token does not re-encode to its text");
  }
  TokenUse use;
  use.model_hash = HashBytes(AsBytes("model-a"));
  use.model = ModelExtent{22, 8};
  absl::StatusOr<VerifiedToken> verified = Verifier().Verify(*token, use);
  if (verified.ok() &&
      !VerifySignature(Owner().public_key, AsBytes(TokenSigningInput(token->payload_bytes)),
                       token->signature)) {
    Fail("a token verified without the trusted key's signature");
  }
}

void FuzzScope(std::string_view text) {
  absl::StatusOr<ShardScope> scope = ParseScope(text);
  if (!scope.ok()) return;
  absl::StatusOr<ShardScope> again = ParseScope(scope->ToString());
  if (!again.ok() || !(*again == *scope)) Fail("a scope does not re-parse from its text");
  wire::TokenScope proto;
  ScopeToProto(*scope, &proto);
  absl::StatusOr<ShardScope> back = ScopeFromProto(proto);
  if (!back.ok() || !(*back == *scope)) Fail("a scope does not survive its wire form");
  (void)scope->ClipToModel(22, 8);
}

// ---- Seeds -----------------------------------------------------------------------------

std::vector<std::pair<std::string, std::string>> Seeds() {
  SignKeyPair worker = GenerateSignKeyPair("https://worker.example");
  TokenRequest request;
  request.subject_origin = worker.origin;
  request.subject_key = worker.public_key;
  request.audience = "cluster-1";
  request.model_hash = HashBytes(AsBytes("model-a"));
  request.permissions.Add(Permission::kHostShard);
  request.not_before = kNow - std::chrono::minutes(1);
  request.ttl = std::chrono::hours(1);
  std::vector<std::pair<std::string, std::string>> seeds;
  auto add = [&](const char* name, const TokenRequest& r) {
    absl::StatusOr<std::string> token = IssueToken(Owner(), r);
    if (!token.ok()) Fail(std::string(token.status().message()));
    seeds.emplace_back(name, *token);
  };
  add("token_whole_model", request);
  request.scope = *ParseScope("layers=0-3,8;experts=1-2");
  request.permissions.Add(Permission::kInfer);
  request.subject_curve_key = GenerateCurveKeyPair(worker.origin).public_key;
  add("token_scoped", request);
  request.audience.clear();
  request.scope = *ParseScope("layers=30-40");
  add("token_out_of_model", request);
  seeds.emplace_back("scope", "layers=0-11;experts=0-3,5");
  return seeds;
}

void WriteSeeds(const char* dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) Fail(std::string("cannot create ") + dir);
  for (const auto& [name, input] : Seeds()) {
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
  // A buffer of the input's own size, so that ASan catches any read past it.
  const std::string text(reinterpret_cast<const char*>(data), size);
  shardrun::auth::FuzzToken(text);
  shardrun::auth::FuzzScope(text);
  (void)shardrun::auth::ParsePermissions(text);
  (void)shardrun::auth::ParseTtl(text);
  (void)shardrun::auth::ValidateOrigin(text);
  return 0;
}
