// Permission tokens, key files, scopes, revocation, the hello proof and admission, and the
// `shardrun keygen` / `shardrun token` commands end to end.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "auth/admission.h"
#include "auth/allowed_keys.h"
#include "auth/clock.h"
#include "auth/encoding.h"
#include "auth/key_file.h"
#include "auth/keys.h"
#include "auth/origin.h"
#include "auth/peer_gate.h"
#include "auth/proof.h"
#include "auth/revocation_list.h"
#include "auth/scope.h"
#include "auth/token_codec.h"
#include "auth/token_issuer.h"
#include "auth/token_verifier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/content_hash.h"
#include "tests/test_util.h"

namespace shardrun::auth {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::system_clock;

constexpr char kOwner[] = "https://owner.example";
constexpr char kWorker[] = "https://worker.example";
constexpr char kCluster[] = "cluster-1";
// 2024-01-01T00:00:00Z: tests run on a clock of their own.
const Clock::time_point kT0 = Clock::time_point(std::chrono::seconds(1704067200));

Sha256 ModelHash(const std::string& name) { return HashBytes(AsBytes(name)); }

int FileMode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// An owner, a worker, a token for the worker, and a verifier whose clock the test moves.
class TokenTest : public ::testing::Test {
 protected:
  TokenTest()
      : owner_(GenerateSignKeyPair(kOwner)),
        worker_(GenerateSignKeyPair(kWorker)),
        worker_curve_(GenerateCurveKeyPair(kWorker)),
        coordinator_curve_(GenerateCurveKeyPair(kOwner)),
        now_(std::make_shared<Clock::time_point>(kT0)) {}

  TokenRequest Request() const {
    TokenRequest r;
    r.subject_origin = kWorker;
    r.subject_key = worker_.public_key;
    r.audience = kCluster;
    r.model_hash = ModelHash("model-a");
    r.permissions.Add(Permission::kHostShard);
    r.not_before = kT0;
    r.ttl = std::chrono::hours(1);
    return r;
  }

  std::string Issue(const TokenRequest& request) {
    absl::StatusOr<std::string> token = IssueToken(owner_, request);
    EXPECT_TRUE(token.ok()) << token.status();
    return token.value_or("");
  }
  std::string Issue() { return Issue(Request()); }

  TrustPolicy Policy() const {
    TrustPolicy p;
    p.trusted_issuers.push_back(owner_.Public());
    p.audience = kCluster;
    return p;
  }
  WallClock TestClock() const {
    return [now = now_] { return *now; };
  }
  TokenVerifier Verifier(TrustPolicy policy) const { return TokenVerifier(policy, TestClock()); }
  TokenVerifier Verifier() const { return Verifier(Policy()); }

  static TokenUse HostShard() {
    TokenUse use;
    use.model_hash = ModelHash("model-a");
    use.permission = Permission::kHostShard;
    use.model = ModelExtent{22, 0};
    return use;
  }

  // The status of verifying `token` for HostShard() with `verifier`.
  static absl::Status Check(const TokenVerifier& verifier, const std::string& token,
                            const TokenUse& use = HostShard()) {
    return verifier.Verify(token, use).status();
  }

  SignKeyPair owner_;
  SignKeyPair worker_;
  CurveKeyPair worker_curve_;
  CurveKeyPair coordinator_curve_;
  std::shared_ptr<Clock::time_point> now_;
};

// ---- Encodings and origins ------------------------------------------------------------

TEST(EncodingTest, Base64UrlRoundTripsAndIsStrict) {
  for (std::string s : {"", "a", "ab", "abc", "abcd", "\xff\xfe\x00\x01"}) {
    absl::StatusOr<std::string> back = Base64UrlDecode(Base64UrlEncode(s));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, s);
  }
  EXPECT_FALSE(Base64UrlDecode("YQ==").ok());  // padding
  EXPECT_FALSE(Base64UrlDecode("Y+8").ok());   // the standard alphabet
  EXPECT_FALSE(Base64UrlDecode("YR").ok());    // non-zero trailing bits: a second form of "a"
  EXPECT_FALSE(Base64UrlDecode("Y Q").ok());
  EXPECT_FALSE(Base64UrlDecode("YW\xc6Jj").ok());  // a byte >= 0x80 inside (fuzzer finding)
}

TEST(EncodingTest, HexAndZ85AreStrict) {
  EXPECT_EQ(*HexDecode("00ff10"), std::string("\x00\xff\x10", 3));
  EXPECT_FALSE(HexDecode("0").ok());
  EXPECT_FALSE(HexDecode("FF").ok());  // upper case is not what HexEncode writes
  const CurveKeyPair pair = GenerateCurveKeyPair(kOwner);
  const std::string z85 = Z85EncodeKey(pair.public_key);
  ASSERT_EQ(z85.size(), 40u);
  EXPECT_EQ(*Z85DecodeKey(z85), std::string(pair.public_key.begin(), pair.public_key.end()));
  EXPECT_FALSE(Z85DecodeKey(z85.substr(1)).ok());
  EXPECT_FALSE(Z85DecodeKey(std::string(40, '"')).ok());  // not in the alphabet
}

TEST(OriginTest, OnlyCanonicalOriginsPass) {
  for (const char* ok : {"https://a.example", "http://localhost:8080", "https://10.0.0.1",
                         "https://a-b.c.example:8443"}) {
    EXPECT_TRUE(ValidateOrigin(ok).ok()) << ok;
  }
  EXPECT_THAT(ValidateOrigin("ftp://a.example").message(), HasSubstr("expected https://"));
  EXPECT_THAT(ValidateOrigin("https://A.example").message(), HasSubstr("no upper case"));
  EXPECT_THAT(ValidateOrigin("https://a.example/").message(), HasSubstr("no path"));
  EXPECT_THAT(ValidateOrigin("https://a.example:443").message(), HasSubstr("default port"));
  EXPECT_THAT(ValidateOrigin("https://a.example:0").message(), HasSubstr("1 to 65535"));
  // A long run of digits (found by token_fuzzer under UBSan: it overflowed an int).
  EXPECT_THAT(ValidateOrigin("http://lay-r:/qqqq").message(), HasSubstr("1 to 65535"));
  EXPECT_THAT(ValidateOrigin("https://a.example:99999999999999").message(),
              HasSubstr("1 to 65535"));
  EXPECT_THAT(ValidateOrigin("https://a.example:65536").message(), HasSubstr("1 to 65535"));
  EXPECT_THAT(ValidateOrigin("https://a..example").message(), HasSubstr("empty label"));
  EXPECT_THAT(ValidateOrigin("https://").message(), HasSubstr("no host"));
}

// ---- Key files --------------------------------------------------------------------------

TEST(KeyFileTest, KeyDirectoryRoundTripsWithMode0600) {
  const std::string dir = testing::MakeTempDir() + "/keys";
  const SignKeyPair sign = GenerateSignKeyPair(kOwner);
  const CurveKeyPair curve = GenerateCurveKeyPair(kOwner);
  ASSERT_TRUE(WriteKeyDirectory(dir, sign, curve, false).ok());
  const KeyDirectory paths = KeyPaths(dir);
  EXPECT_EQ(FileMode(dir), 0700);
  for (const std::string& p :
       {paths.sign_secret, paths.sign_public, paths.curve_secret, paths.curve_public}) {
    EXPECT_EQ(FileMode(p), 0600) << p;
  }
  absl::StatusOr<SignKeyPair> sign_back = LoadSignSecretKey(paths.sign_secret);
  ASSERT_TRUE(sign_back.ok()) << sign_back.status();
  EXPECT_EQ(sign_back->origin, kOwner);
  EXPECT_EQ(sign_back->public_key, sign.public_key);
  EXPECT_EQ(sign_back->secret_key, sign.secret_key);
  EXPECT_EQ(LoadSignPublicKey(paths.sign_public)->key, sign.public_key);
  absl::StatusOr<CurveKeyPair> curve_back = LoadCurveSecretKey(paths.curve_secret);
  ASSERT_TRUE(curve_back.ok()) << curve_back.status();
  EXPECT_EQ(curve_back->secret_key, curve.secret_key);
  EXPECT_EQ(LoadCurvePublicKey(paths.curve_public)->key, curve.public_key);
  // The Curve files hold Z85, as ZeroMQ takes them.
  EXPECT_THAT(testing::ReadFile(paths.curve_public), HasSubstr(curve.Public().Z85()));

  // No overwrite without asking, and nothing half-written.
  const absl::Status again = WriteKeyDirectory(dir, GenerateSignKeyPair(kOwner), curve, false);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(LoadSignPublicKey(paths.sign_public)->key, sign.public_key);
  ASSERT_TRUE(WriteKeyDirectory(dir, GenerateSignKeyPair(kOwner), curve, true).ok());
  EXPECT_NE(LoadSignPublicKey(paths.sign_public)->key, sign.public_key);
  EXPECT_EQ(FileMode(paths.sign_secret), 0600);
}

TEST(KeyFileTest, LoadingRefusesExposedWrongOrEditedKeys) {
  const std::string dir = testing::MakeTempDir();
  const SignKeyPair sign = GenerateSignKeyPair(kOwner);
  ASSERT_TRUE(WriteKeyDirectory(dir, sign, GenerateCurveKeyPair(kOwner), false).ok());
  const KeyDirectory paths = KeyPaths(dir);

  ASSERT_EQ(chmod(paths.sign_secret.c_str(), 0644), 0);
  const absl::Status exposed = LoadSignSecretKey(paths.sign_secret).status();
  EXPECT_EQ(exposed.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(exposed.message(), HasSubstr("others may read it (mode 0644)"));
  ASSERT_EQ(chmod(paths.sign_secret.c_str(), 0600), 0);

  EXPECT_THAT(LoadSignPublicKey(paths.sign_secret).status().message(),
              HasSubstr("holds a sign-secret key where a sign-public key is needed"));
  EXPECT_THAT(LoadCurvePublicKey(paths.sign_public).status().message(),
              HasSubstr("where a curve-public key is needed"));

  // A public line that does not belong to the secret.
  std::string text = testing::ReadFile(paths.sign_secret);
  const std::string other = HexEncode(GenerateSignKeyPair(kOwner).public_key);
  text.replace(text.find(HexEncode(sign.public_key)), other.size(), other);
  const std::string edited = dir + "/edited.key";
  WriteText(edited, text);
  ASSERT_EQ(chmod(edited.c_str(), 0600), 0);
  EXPECT_THAT(LoadSignSecretKey(edited).status().message(),
              HasSubstr("does not belong to the secret key"));

  const std::string garbage = dir + "/garbage.pub";
  WriteText(garbage, "kind: sign-public\norigin: https://a.example\npublic: zz\n");
  EXPECT_THAT(LoadSignPublicKey(garbage).status().message(), HasSubstr("bad public key"));
  WriteText(garbage, "kind: sign-public\norigin: HTTPS://a.example\npublic: 00\n");
  EXPECT_THAT(LoadSignPublicKey(garbage).status().message(), HasSubstr("origin"));
}

// ---- Scopes -------------------------------------------------------------------------------

TEST(ScopeTest, ParsesMergesAndPrints) {
  absl::StatusOr<ShardScope> s = ParseScope("layers=0-11");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ToString(), "layers=0-11");
  EXPECT_TRUE(s->AllowsLayers(0, 12));
  EXPECT_FALSE(s->AllowsLayers(11, 13));
  EXPECT_TRUE(s->AllowsExpert(3, 7));  // layers only: all their experts

  s = ParseScope("experts=5,0-3,2-4");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ToString(), "experts=0-5");  // merged
  EXPECT_FALSE(s->AllowsLayer(0));          // an expert worker holds no layer bodies
  EXPECT_TRUE(s->AllowsExpert(17, 5));
  EXPECT_FALSE(s->AllowsExpert(17, 6));

  s = ParseScope("layers=0-3,8;experts=0-1");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ToString(), "layers=0-3,8;experts=0-1");
  EXPECT_TRUE(s->AllowsLayer(8));
  EXPECT_FALSE(s->AllowsLayer(5));
  EXPECT_TRUE(s->AllowsExpert(2, 1));
  EXPECT_FALSE(s->AllowsExpert(5, 1));
  EXPECT_FALSE(s->AllowsExpert(2, 2));

  EXPECT_TRUE(ShardScope().whole_model());
  EXPECT_TRUE(ShardScope().AllowsLayers(0, 1000));
}

TEST(ScopeTest, RefusesMalformedScopes) {
  EXPECT_THAT(ParseScope("").status().message(), HasSubstr("empty scope"));
  EXPECT_THAT(ParseScope("heads=0-1").status().message(), HasSubstr("expected layers="));
  EXPECT_THAT(ParseScope("layers=3-1").status().message(), HasSubstr("ends before it begins"));
  EXPECT_THAT(ParseScope("layers=-1").status().message(), HasSubstr("expected N or N-M"));
  EXPECT_THAT(ParseScope("layers=+1").status().message(), HasSubstr("expected N or N-M"));
  EXPECT_THAT(ParseScope("layers=0-99999").status().message(), HasSubstr("beyond"));
  EXPECT_THAT(ParseScope("layers=1;layers=2").status().message(), HasSubstr("twice"));
  EXPECT_THAT(ParseScope("layers=").status().message(), HasSubstr("expected N or N-M"));
}

TEST(ScopeTest, ClipsToTheModelOrHoldsNothing) {
  absl::StatusOr<ShardScope> clipped = ParseScope("layers=4-40")->ClipToModel(22, 0);
  ASSERT_TRUE(clipped.ok());
  EXPECT_EQ(clipped->ToString(), "layers=4-21");

  EXPECT_EQ(ParseScope("layers=40-50")->ClipToModel(22, 0).status().message(),
            "scope holds nothing: layers=40-50 lie outside the model's 22 layers");
  EXPECT_EQ(ParseScope("experts=0-3")->ClipToModel(22, 0).status().message(),
            "scope holds nothing: experts=0-3 only, and the model has no experts");
  EXPECT_EQ(ParseScope("experts=8-9")->ClipToModel(4, 8).status().message(),
            "scope holds nothing: experts=8-9 lie outside the model's 8 experts");
  EXPECT_TRUE(ParseScope("experts=7-9")->ClipToModel(4, 8).ok());
  EXPECT_TRUE(ParseScope("layers=0;experts=99")->ClipToModel(4, 8).ok());  // layer 0's body
}

TEST(ScopeTest, WireFormIsCanonical) {
  const ShardScope scope = *ParseScope("layers=0-3,8;experts=1");
  wire::TokenScope proto;
  ScopeToProto(scope, &proto);
  EXPECT_EQ(*ScopeFromProto(proto), scope);
  auto* span = proto.mutable_layers()->add_spans();  // overlaps the last one
  span->set_begin(8);
  span->set_end(10);
  EXPECT_THAT(ScopeFromProto(proto).status().message(), HasSubstr("not sorted, overlapping"));
}

// ---- Token codec -------------------------------------------------------------------------

TEST_F(TokenTest, IssuedTokenParsesBackToItsClaims) {
  TokenRequest request = Request();
  request.scope = *ParseScope("layers=0-11");
  request.permissions.Add(Permission::kInfer);
  request.subject_curve_key = worker_curve_.public_key;
  const std::string token = Issue(request);
  EXPECT_TRUE(token.starts_with("srt1."));
  absl::StatusOr<ParsedToken> parsed = ParseToken(token);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const TokenClaims& c = parsed->claims;
  EXPECT_EQ(c.issuer_origin, kOwner);
  EXPECT_EQ(c.issuer_key, owner_.public_key);
  EXPECT_EQ(c.subject_origin, kWorker);
  EXPECT_EQ(c.subject_key, worker_.public_key);
  EXPECT_EQ(c.subject_curve_key, worker_curve_.public_key);
  EXPECT_EQ(c.audience, kCluster);
  EXPECT_EQ(c.model_hash, ModelHash("model-a"));
  EXPECT_EQ(c.permissions.ToString(), "host_shard,infer");
  EXPECT_EQ(c.scope.ToString(), "layers=0-11");
  EXPECT_EQ(c.not_before, UnixSeconds(kT0));
  EXPECT_EQ(c.expires_at, UnixSeconds(kT0) + 3600);
  EXPECT_EQ(EncodeToken(parsed->payload_bytes, parsed->signature), token);
  EXPECT_NE(ParseToken(Issue(request))->claims.token_id, c.token_id);  // fresh ids
}

TEST_F(TokenTest, ParserRefusesMalformedTokens) {
  const std::string token = Issue();
  const size_t dot = token.rfind('.');
  auto message = [](const std::string& t) { return std::string(ParseToken(t).status().message()); };
  EXPECT_THAT(message("srt2" + token.substr(4)), HasSubstr("does not start with \"srt1.\""));
  EXPECT_THAT(message(token.substr(0, dot)), HasSubstr("expected srt1.<payload>.<signature>"));
  EXPECT_THAT(message(token + ".x"), HasSubstr("expected srt1.<payload>.<signature>"));
  EXPECT_THAT(message(token.substr(0, dot + 1) + Base64UrlEncode(std::string(63, 's'))),
              HasSubstr("signature of 63 bytes, expected 64"));
  EXPECT_THAT(message(token + std::string(5000, 'A')), HasSubstr("at most 4096"));
  EXPECT_THAT(message("srt1.." + token.substr(dot + 1)), HasSubstr("payload of 0 bytes"));
  EXPECT_THAT(message("srt1.*" + token.substr(5)), HasSubstr("payload: not base64url"));

  // Valid protobuf that is not a canonical payload: an unknown field appended.
  absl::StatusOr<ParsedToken> parsed = ParseToken(token);
  ASSERT_TRUE(parsed.ok());
  const std::string extended = parsed->payload_bytes + std::string("\xa0\x06\x01", 3);
  EXPECT_THAT(message(EncodeToken(extended, parsed->signature)),
              HasSubstr("not in canonical form"));
  // A payload of another format version.
  wire::TokenPayload payload = ClaimsToPayload(parsed->claims);
  payload.set_format_version(2);
  EXPECT_THAT(message(EncodeToken(payload.SerializeAsString(), parsed->signature)),
              HasSubstr("format version 2, this build reads 1"));
  payload = ClaimsToPayload(parsed->claims);
  payload.set_model_hash("short");
  EXPECT_THAT(message(EncodeToken(payload.SerializeAsString(), parsed->signature)),
              HasSubstr("model hash has 5 bytes, expected 32"));
  payload = ClaimsToPayload(parsed->claims);
  payload.clear_permissions();
  EXPECT_THAT(message(EncodeToken(payload.SerializeAsString(), parsed->signature)),
              HasSubstr("grants no permission"));
}

TEST(TtlTest, ParsesDurations) {
  EXPECT_EQ(*ParseTtl("90s"), std::chrono::seconds(90));
  EXPECT_EQ(*ParseTtl("30m"), std::chrono::seconds(1800));
  EXPECT_EQ(*ParseTtl("1h"), std::chrono::seconds(3600));
  EXPECT_EQ(*ParseTtl("7d"), std::chrono::seconds(7 * 86400));
  for (const char* bad : {"", "h", "1", "1w", "-1h", "1.5h", "99999999999d"}) {
    EXPECT_FALSE(ParseTtl(bad).ok()) << bad;
  }
}

// ---- Verification: every refusal with its own reason ---------------------------------

TEST_F(TokenTest, ValidTokenVerifies) {
  absl::StatusOr<VerifiedToken> v = Verifier().Verify(Issue(), HostShard());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->claims.subject_origin, kWorker);
  EXPECT_TRUE(v->scope.whole_model());
}

TEST_F(TokenTest, RefusesBadSignature) {
  const std::string token = Issue();
  absl::StatusOr<ParsedToken> parsed = ParseToken(token);
  ASSERT_TRUE(parsed.ok());
  // Claims altered after signing: a permission added, the signature kept.
  TokenClaims claims = parsed->claims;
  claims.permissions.Add(Permission::kInfer);
  const std::string altered =
      EncodeToken(ClaimsToPayload(claims).SerializeAsString(), parsed->signature);
  const absl::Status s = Check(Verifier(), altered);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("bad token signature"));
  // A flipped signature bit.
  Signature flipped = parsed->signature;
  flipped[10] ^= 1;
  EXPECT_THAT(Check(Verifier(), EncodeToken(parsed->payload_bytes, flipped)).message(),
              HasSubstr("bad token signature"));
}

TEST_F(TokenTest, RefusesUntrustedIssuer) {
  // A token the worker signed for itself, naming its own key as issuer.
  const SignKeyPair rogue = GenerateSignKeyPair(kOwner);
  absl::StatusOr<std::string> token = IssueToken(rogue, Request());
  ASSERT_TRUE(token.ok());
  const absl::Status s = Check(Verifier(), *token);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), absl::StrCat("issuer key ", rogue.Public().Fingerprint(),
                                      " (origin https://owner.example) is not trusted"));
  // The owner's key trusted under another origin does not vouch for this one.
  TrustPolicy policy = Policy();
  policy.trusted_issuers[0].origin = "https://elsewhere.example";
  EXPECT_THAT(Check(Verifier(policy), Issue()).message(),
              HasSubstr("is trusted for origin https://elsewhere.example, but the token names "
                        "origin https://owner.example"));
}

TEST_F(TokenTest, RefusesExpiredToken) {
  const std::string token = Issue();
  *now_ = kT0 + std::chrono::hours(1) + std::chrono::seconds(59);  // within the skew
  EXPECT_TRUE(Check(Verifier(), token).ok());
  *now_ = kT0 + std::chrono::hours(1) + std::chrono::seconds(60);
  EXPECT_EQ(Check(Verifier(), token).message(),
            "token expired at 2024-01-01T01:00:00Z (now 2024-01-01T01:01:00Z)");
}

TEST_F(TokenTest, RefusesTokenNotYetValid) {
  TokenRequest request = Request();
  request.not_before = kT0 + std::chrono::minutes(10);
  const std::string token = Issue(request);
  *now_ = kT0 + std::chrono::seconds(539);  // 61 s early: beyond the skew
  EXPECT_EQ(Check(Verifier(), token).message(),
            "token not valid until 2024-01-01T00:10:00Z (now 2024-01-01T00:08:59Z, clock skew "
            "allowed 60 s)");
  *now_ = kT0 + std::chrono::seconds(540);  // 60 s early: tolerated
  EXPECT_TRUE(Check(Verifier(), token).ok());
}

TEST_F(TokenTest, RefusesWrongAudience) {
  TrustPolicy policy = Policy();
  policy.audience = "cluster-2";
  EXPECT_EQ(Check(Verifier(policy), Issue()).message(),
            "token is for audience \"cluster-1\", this cluster is \"cluster-2\"");
  policy.audience = "";
  EXPECT_THAT(Check(Verifier(policy), Issue()).message(),
              HasSubstr("this cluster has no audience name to match it"));
  TokenRequest any = Request();
  any.audience = "";
  EXPECT_TRUE(Check(Verifier(policy), Issue(any)).ok());  // no audience: any cluster
}

TEST_F(TokenTest, RefusesWrongModelHash) {
  TokenUse use = HostShard();
  use.model_hash = ModelHash("model-b");
  EXPECT_EQ(Check(Verifier(), Issue(), use).message(),
            absl::StrCat("token is for model ", ShortDigest(ModelHash("model-a")),
                         "..., this model is ", ShortDigest(ModelHash("model-b")), "..."));
}

TEST_F(TokenTest, RefusesMissingPermission) {
  TokenUse use = HostShard();
  use.permission = Permission::kInfer;
  EXPECT_EQ(Check(Verifier(), Issue(), use).message(), "token grants host_shard, not infer");
}

TEST_F(TokenTest, RefusesScopeThatHoldsNothing) {
  TokenRequest request = Request();
  request.scope = *ParseScope("layers=30-40");
  const absl::Status s = Check(Verifier(), Issue(request));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "scope holds nothing: layers=30-40 lie outside the model's 22 layers");
  request.scope = *ParseScope("layers=20-40");
  absl::StatusOr<VerifiedToken> v = Verifier().Verify(Issue(request), HostShard());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->scope.ToString(), "layers=20-21");  // clipped to the model
}

TEST_F(TokenTest, RefusesRevokedTokenAndReloadsTheList) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/revoked.txt";
  const std::string token = Issue();
  const std::string id = ParseToken(token)->claims.TokenIdHex();
  WriteText(path, "# revoked tokens\n" + HexEncode(ParseToken(Issue())->claims.token_id) + "\n");
  TrustPolicy policy = Policy();
  policy.revocations = std::make_shared<RevocationList>(path);
  const TokenVerifier verifier = Verifier(policy);
  EXPECT_TRUE(Check(verifier, token).ok());
  EXPECT_EQ(policy.revocations->size(), 1u);

  // Revoking is an edit; the next check sees it.
  WriteText(path, absl::StrCat("# revoked tokens\n", id, "  # leaked\n"));
  const absl::Status s = Check(verifier, token);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), absl::StrCat("token ", id, " is revoked (listed in ", path, ")"));

  // A broken or missing list refuses everything (fail closed) until it is fixed.
  WriteText(path, "not-a-token-id\n");
  EXPECT_THAT(Check(verifier, token).message(), HasSubstr("line 1 is not a token id"));
  std::filesystem::remove(path);
  EXPECT_EQ(Check(verifier, token).code(), absl::StatusCode::kUnavailable);
  WriteText(path, "");
  EXPECT_TRUE(Check(verifier, token).ok());
}

// ---- The hello proof and admission ----------------------------------------------------

class AdmissionTest : public TokenTest {
 protected:
  AdmissionTest() : verifier_(Verifier()) {
    hello_.set_protocol_version(wire::PROTOCOL_VERSION);
    hello_.set_worker_id("w1");
    hello_.mutable_budget()->set_memory_bytes(1 << 30);
    allow_list_ = std::make_shared<KeyAllowList>();
  }

  AdmissionOptions Options() {
    AdmissionOptions o;
    o.coordinator_origin = kOwner;
    o.coordinator_curve_key = coordinator_curve_.public_key;
    o.allow_list = allow_list_;
    return o;
  }

  // The worker's answer to `challenge` with `token`, signed by `signer`.
  wire::Proof Answer(const wire::Challenge& challenge, const std::string& token,
                     const SignKeyPair& signer, const wire::Hello& hello) {
    absl::StatusOr<wire::Proof> proof =
        MakeProof(challenge, HelloDigest(hello), token, signer, coordinator_curve_.public_key,
                  worker_curve_.public_key);
    EXPECT_TRUE(proof.ok()) << proof.status();
    return proof.value_or(wire::Proof());
  }
  wire::Proof Answer(const wire::Challenge& challenge, const std::string& token) {
    return Answer(challenge, token, worker_, hello_);
  }

  absl::StatusOr<AdmittedPeer> Admit(Admission& admission, const std::string& peer,
                                     const wire::Proof& proof) {
    return admission.Admit(peer, HelloDigest(hello_), proof, HostShard(), worker_curve_.public_key);
  }

  TokenVerifier verifier_;
  wire::Hello hello_;
  std::shared_ptr<KeyAllowList> allow_list_;
};

TEST_F(AdmissionTest, ValidProofAdmitsThePeerWithItsScopeAndKey) {
  TokenRequest request = Request();
  request.scope = *ParseScope("layers=0-11");
  const std::string token = Issue(request);
  Admission admission(Options(), &verifier_);
  absl::StatusOr<wire::Challenge> challenge = admission.IssueChallenge("w1");
  ASSERT_TRUE(challenge.ok());
  EXPECT_EQ(challenge->nonce().size(), kNonceBytes);
  EXPECT_EQ(challenge->coordinator_origin(), kOwner);
  EXPECT_FALSE(allow_list_->Contains(worker_curve_.public_key, kT0));

  absl::StatusOr<AdmittedPeer> peer = Admit(admission, "w1", Answer(*challenge, token));
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->origin, kWorker);
  EXPECT_TRUE(peer->permissions.Has(Permission::kHostShard));
  EXPECT_EQ(peer->scope.ToString(), "layers=0-11");
  EXPECT_EQ(peer->curve_key, worker_curve_.public_key);
  EXPECT_EQ(peer->token_id, ParseToken(token)->claims.TokenIdHex());
  // Its transport key is now allowed, until the token expires.
  EXPECT_TRUE(allow_list_->Contains(worker_curve_.public_key, kT0 + std::chrono::minutes(59)));
  EXPECT_FALSE(allow_list_->Contains(worker_curve_.public_key, kT0 + std::chrono::hours(1)));
  EXPECT_EQ(admission.admitted(), 1u);
  EXPECT_EQ(admission.pending(), 0u);
}

TEST_F(AdmissionTest, RefusesReplayedHelloProof) {
  const std::string token = Issue();
  Admission admission(Options(), &verifier_);
  const wire::Challenge challenge = *admission.IssueChallenge("w1");
  const wire::Proof proof = Answer(challenge, token);
  ASSERT_TRUE(Admit(admission, "w1", proof).ok());
  const absl::Status replay = Admit(admission, "w1", proof).status();
  EXPECT_EQ(replay.message(), "nonce already used: a replayed hello proof");
  // On a new connection too, even after that connection got a challenge of its own.
  ASSERT_TRUE(admission.IssueChallenge("w1-again").ok());
  EXPECT_EQ(Admit(admission, "w1-again", proof).status().message(),
            "nonce already used: a replayed hello proof");
  EXPECT_EQ(admission.refused(), 2u);
}

TEST_F(AdmissionTest, RefusesTokenPresentedWithAKeyThePeerCannotProve) {
  // A stolen token: the thief signs the proof with its own key, not the token's subject key.
  const std::string token = Issue();
  const SignKeyPair thief = GenerateSignKeyPair(kWorker);
  Admission admission(Options(), &verifier_);
  const wire::Challenge challenge = *admission.IssueChallenge("thief");
  // MakeProof itself refuses; build the proof by hand as a thief would.
  EXPECT_THAT(MakeProof(challenge, HelloDigest(hello_), token, thief, coordinator_curve_.public_key,
                        worker_curve_.public_key)
                  .status()
                  .message(),
              HasSubstr("issued to another subject key"));
  ProofContext context;
  context.nonce = challenge.nonce();
  context.hello_digest = HelloDigest(hello_);
  context.coordinator_origin = kOwner;
  context.coordinator_curve_key = coordinator_curve_.public_key;
  context.peer_curve_key = worker_curve_.public_key;
  context.token = token;
  const Signature signature = thief.Sign(AsBytes(ProofTranscript(context)));
  wire::Proof proof;
  proof.set_token(token);
  proof.set_nonce(challenge.nonce());
  proof.set_curve_key(
      std::string(worker_curve_.public_key.begin(), worker_curve_.public_key.end()));
  proof.set_signature(std::string(signature.begin(), signature.end()));
  const absl::Status s = Admit(admission, "thief", proof).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("proof signature does not verify with the token's subject "
                                     "key"));
  EXPECT_FALSE(allow_list_->Contains(worker_curve_.public_key, kT0));
}

TEST_F(AdmissionTest, ProofIsBoundToItsHelloAndCoordinator) {
  const std::string token = Issue();
  Admission admission(Options(), &verifier_);
  // Signed over another Hello (a bigger budget than the one the coordinator got).
  wire::Hello other = hello_;
  other.mutable_budget()->set_memory_bytes(int64_t{1} << 40);
  wire::Challenge challenge = *admission.IssueChallenge("w1");
  EXPECT_THAT(Admit(admission, "w1", Answer(challenge, token, worker_, other)).status().message(),
              HasSubstr("proof signature does not verify"));
  // Answered for another coordinator: the worker refuses to sign for a key it did not dial.
  challenge = *admission.IssueChallenge("w1");
  const CurveKeyPair elsewhere = GenerateCurveKeyPair(kOwner);
  EXPECT_THAT(MakeProof(challenge, HelloDigest(hello_), token, worker_, elsewhere.public_key,
                        worker_curve_.public_key)
                  .status()
                  .message(),
              HasSubstr("the challenge names coordinator key"));
}

TEST_F(AdmissionTest, RefusesUnknownForeignAndExpiredNonces) {
  const std::string token = Issue();
  Admission admission(Options(), &verifier_);
  wire::Challenge forged;
  forged.set_nonce(std::string(kNonceBytes, 'n'));
  forged.set_coordinator_origin(kOwner);
  forged.set_coordinator_curve_key(
      std::string(coordinator_curve_.public_key.begin(), coordinator_curve_.public_key.end()));
  EXPECT_EQ(Admit(admission, "w1", Answer(forged, token)).status().message(),
            "nonce was not issued by this coordinator, or its challenge expired");

  const wire::Challenge for_w2 = *admission.IssueChallenge("w2");
  EXPECT_EQ(Admit(admission, "w1", Answer(for_w2, token)).status().message(),
            "nonce was issued to another connection");

  const wire::Challenge late = *admission.IssueChallenge("w3");
  *now_ += std::chrono::seconds(31);
  EXPECT_EQ(Admit(admission, "w3", Answer(late, token)).status().message(),
            "challenge expired before the proof arrived");
}

TEST_F(AdmissionTest, RefusesAProofForAnotherTransportKey) {
  TokenRequest request = Request();
  request.subject_curve_key = GenerateCurveKeyPair(kWorker).public_key;  // pinned elsewhere
  Admission admission(Options(), &verifier_);
  // The connection authenticated with one key, the proof names another.
  wire::Challenge challenge = *admission.IssueChallenge("w1");
  const wire::Proof proof = Answer(challenge, Issue());
  const CurveKeyBytes connection = GenerateCurveKeyPair(kWorker).public_key;
  EXPECT_THAT(
      admission.Admit("w1", HelloDigest(hello_), proof, HostShard(), connection).status().message(),
      HasSubstr("but the connection authenticated with"));
  // The token pins a transport key the peer does not use (the worker side refuses to sign).
  challenge = *admission.IssueChallenge("w1");
  EXPECT_THAT(MakeProof(challenge, HelloDigest(hello_), Issue(request), worker_,
                        coordinator_curve_.public_key, worker_curve_.public_key)
                  .status()
                  .message(),
              HasSubstr("binds another transport (Curve) key"));
}

TEST_F(AdmissionTest, TokenRefusalsReachTheCaller) {
  // Every token check runs at admission; one example each way suffices here.
  TokenRequest request = Request();
  request.scope = *ParseScope("layers=30-40");
  Admission admission(Options(), &verifier_);
  wire::Challenge challenge = *admission.IssueChallenge("w1");
  EXPECT_THAT(Admit(admission, "w1", Answer(challenge, Issue(request))).status().message(),
              HasSubstr("scope holds nothing"));
  challenge = *admission.IssueChallenge("w1");
  *now_ += std::chrono::hours(2);
  challenge = *admission.IssueChallenge("w1");
  EXPECT_THAT(Admit(admission, "w1", Answer(challenge, Issue())).status().message(),
              HasSubstr("token expired at"));
}

TEST_F(AdmissionTest, ListedKeysNeedNoTokenAndPendingChallengesAreBounded) {
  AdmissionOptions options = Options();
  options.listed_keys.push_back(worker_curve_.Public());
  options.max_pending_challenges = 2;
  Admission admission(options, &verifier_);
  absl::StatusOr<AdmittedPeer> listed = admission.AdmitListedKey(worker_curve_.public_key);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->origin, kWorker);
  EXPECT_TRUE(listed->token_id.empty());
  EXPECT_EQ(admission.AdmitListedKey(coordinator_curve_.public_key).status().code(),
            absl::StatusCode::kNotFound);

  ASSERT_TRUE(admission.IssueChallenge("a").ok());
  ASSERT_TRUE(admission.IssueChallenge("a").ok());  // replaces a's first challenge
  ASSERT_TRUE(admission.IssueChallenge("b").ok());
  EXPECT_EQ(admission.IssueChallenge("c").status().code(), absl::StatusCode::kResourceExhausted);
  admission.Forget("a");
  EXPECT_TRUE(admission.IssueChallenge("c").ok());
  *now_ += std::chrono::minutes(1);  // expired challenges free their places
  EXPECT_TRUE(admission.IssueChallenge("d").ok());
  EXPECT_TRUE(admission.IssueChallenge("e").ok());
}

// Z85 has '#' among its 85 characters: a key holding one is a key, not a key cut short by a
// comment (comments start a line or follow a blank).
TEST(AllowedKeysTest, AKeyWithAHashIsReadWholeAndCommentsFollowABlank) {
  std::string with_hash;
  for (int i = 0; i < 1000 && with_hash.find('#') == std::string::npos; ++i) {
    with_hash = GenerateCurveKeyPair("https://a.example").Public().Z85();
  }
  ASSERT_NE(with_hash.find('#'), std::string::npos);
  const std::string other = GenerateCurveKeyPair("https://b.example").Public().Z85();
  const std::string text =
      absl::StrCat("# same-origin workers\n", with_hash, "  https://a.example   # the first\n",
                   "   # indented\n\n", other, "\t#\n");
  absl::StatusOr<std::vector<CurvePublicKey>> keys = ParseAllowedKeys(text, "list");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0].Z85(), with_hash);
  EXPECT_EQ((*keys)[0].origin, "https://a.example");
  EXPECT_EQ((*keys)[1].Z85(), other);
  EXPECT_EQ((*keys)[1].origin, "listed key");
  // A key cut short is still an error naming its line.
  EXPECT_THAT(ParseAllowedKeys(absl::StrCat("\n", with_hash.substr(0, 39)), "list").status(),
              ::testing::Property(&absl::Status::message, ::testing::HasSubstr("list line 2")));
}

TEST(PeerGateTest, PendingPeersMaySendOnlyAHandshakeMessage) {
  auto admitted = std::make_shared<KeyAllowList>();
  const CurveKeyBytes key = GenerateCurveKeyPair(kWorker).public_key;
  PeerGate hello_gate(admitted, /*handshake_socket=*/true);
  PeerGate data_gate(admitted, /*handshake_socket=*/false);
  EXPECT_EQ(*hello_gate.Check(key, 1, 200), PeerStanding::kPending);
  // A pending peer's tensors are dropped before anyone decodes them.
  EXPECT_THAT(hello_gate.Check(key, 2, 200).status().message(),
              HasSubstr("only a handshake message is heard"));
  EXPECT_FALSE(hello_gate.Check(key, 1, kMaxHandshakeBytes + 1).ok());
  EXPECT_THAT(data_gate.Check(key, 1, 10).status().message(), HasSubstr("unauthenticated peer"));
  EXPECT_EQ(hello_gate.dropped(), 2u);
  EXPECT_EQ(data_gate.dropped(), 1u);

  admitted->Add(key, kWorker);
  EXPECT_EQ(*data_gate.Check(key, 3, 1 << 20), PeerStanding::kAdmitted);
  admitted->Remove(key);  // revoked at run time: its connection loses its voice at once
  EXPECT_FALSE(data_gate.Check(key, 3, 100).ok());
}

// ---- The command line ------------------------------------------------------------------

TEST(AuthCliTest, KeygenIssueInspectVerifyRoundTrip) {
  const std::string dir = testing::MakeTempDir();
  const std::string model = testing::SharedPath("models/stories260K.gguf");
  testing::CommandResult r =
      testing::RunShardrun({"keygen", "--origin", kOwner, "--out", dir + "/owner"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunShardrun({"keygen", "--origin", kWorker, "--out", dir + "/worker"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"sign.key", "sign.pub", "curve.key", "curve.pub"}) {
    EXPECT_EQ(FileMode(dir + "/owner/" + f), 0600) << f;
  }
  r = testing::RunShardrun({"keygen", "--origin", kOwner, "--out", dir + "/owner"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("refusing to overwrite"));

  r = testing::RunShardrun({"token", "issue", "--key", dir + "/owner/sign.key", "--subject",
                            kWorker, "--subject-key", dir + "/worker/sign.pub", "--perm",
                            "host_shard", "--model", model, "--ttl", "1h", "--scope", "layers=0-2",
                            "--audience", kCluster});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string token(absl::StripTrailingAsciiWhitespace(r.out));
  ASSERT_TRUE(token.starts_with("srt1.")) << token;

  r = testing::RunShardrun({"token", "inspect", token});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("subject      https://worker.example"));
  EXPECT_THAT(r.out, HasSubstr("permissions  host_shard"));
  EXPECT_THAT(r.out, HasSubstr("scope        layers=0-2"));
  EXPECT_THAT(r.out, HasSubstr("audience     cluster-1"));

  const std::string trust = dir + "/owner/sign.pub";
  r = testing::RunShardrun({"token", "verify", token, "--trust", trust, "--model", model,
                            "--audience", kCluster, "--perm", "host_shard"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("valid: https://worker.example may host_shard (layers=0-2)"));

  // Each failure exits non-zero with its reason.
  r = testing::RunShardrun(
      {"token", "verify", token, "--trust", dir + "/worker/sign.pub", "--audience", kCluster});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is not trusted"));
  r = testing::RunShardrun({"token", "verify", token, "--trust", trust, "--audience", "other"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("token is for audience \"cluster-1\", this cluster is \"other\""));
  r = testing::RunShardrun({"token", "verify", token, "--trust", trust, "--audience", kCluster,
                            "--model", testing::SharedPath("models/mini-f32.gguf")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("token is for model"));
  r = testing::RunShardrun(
      {"token", "verify", token, "--trust", trust, "--audience", kCluster, "--perm", "infer"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("token grants host_shard, not infer"));
  const std::string revoked = dir + "/revoked";
  WriteText(revoked, ParseToken(token)->claims.TokenIdHex() + "\n");
  r = testing::RunShardrun(
      {"token", "verify", token, "--trust", trust, "--audience", kCluster, "--revoked", revoked});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is revoked"));
  std::string tampered = token;
  tampered[20] = tampered[20] == 'A' ? 'B' : 'A';
  r = testing::RunShardrun({"token", "verify", tampered, "--trust", trust, "--audience", kCluster});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err,
              ::testing::AnyOf(HasSubstr("bad token signature"), HasSubstr("malformed token")));

  // Issuing refuses a scope that holds nothing of the model, and a subject key of another
  // origin.
  r = testing::RunShardrun({"token", "issue", "--key", dir + "/owner/sign.key", "--subject",
                            kWorker, "--subject-key", dir + "/worker/sign.pub", "--perm",
                            "host_shard", "--model", model, "--scope", "layers=40-50"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("scope holds nothing: layers=40-50 lie outside the model's"));
  r = testing::RunShardrun({"token", "issue", "--key", dir + "/owner/sign.key", "--subject",
                            "https://other.example", "--subject-key", dir + "/worker/sign.pub",
                            "--perm", "infer", "--model", model});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("belongs to origin https://worker.example"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shardrun::auth
