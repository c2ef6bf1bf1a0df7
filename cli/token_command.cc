// `shardrun token issue|inspect|verify`: permission tokens that let a worker or client of
// another origin hold shards of, or run inference on, a model its owner signed them for.
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "auth/clock.h"
#include "auth/encoding.h"
#include "auth/key_file.h"
#include "auth/permission.h"
#include "auth/revocation_list.h"
#include "auth/scope.h"
#include "auth/token_codec.h"
#include "auth/token_issuer.h"
#include "auth/token_text.h"
#include "auth/token_verifier.h"
#include "cli/commands.h"
#include "model/content_hash.h"
#include "model/model_file.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

struct IssueFlags {
  std::string key;
  std::string subject;
  std::string subject_key;
  std::string subject_curve_key;
  std::vector<std::string> permissions;
  std::string model;
  std::string ttl = "1h";
  std::vector<std::string> scope;
  std::string audience;
};

struct VerifyFlags {
  std::string token;
  std::vector<std::string> trust;
  std::string model;
  std::string audience;
  std::string permission;
  std::string revoked;
  int clock_skew_s = 60;
};

// The model's hash and size (layers, experts), for the token's claims and scope checks.
struct ModelFacts {
  Sha256 hash;
  auth::ModelExtent extent;
};

absl::StatusOr<ModelFacts> ReadModelFacts(const std::string& path) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open(path);
  if (!model.ok()) return model.status();
  ModelFacts facts;
  facts.hash = HashBytes((*model)->bytes());
  facts.extent = {(*model)->config().n_layers, (*model)->config().n_experts};
  return facts;
}

absl::Status RunIssue(const IssueFlags& flags) {
  absl::StatusOr<auth::SignKeyPair> issuer = auth::LoadSignSecretKey(flags.key);
  if (!issuer.ok()) return issuer.status();
  absl::StatusOr<auth::SignPublicKey> subject = auth::LoadSignPublicKey(flags.subject_key);
  if (!subject.ok()) return subject.status();
  if (subject->origin != flags.subject) {
    return absl::InvalidArgumentError(absl::StrCat(flags.subject_key, " belongs to origin ",
                                                   subject->origin, ", not --subject ",
                                                   flags.subject));
  }
  auth::TokenRequest request;
  request.subject_origin = flags.subject;
  request.subject_key = subject->key;
  if (!flags.subject_curve_key.empty()) {
    absl::StatusOr<auth::CurvePublicKey> curve = auth::LoadCurvePublicKey(flags.subject_curve_key);
    if (!curve.ok()) return curve.status();
    if (curve->origin != flags.subject) {
      return absl::InvalidArgumentError(absl::StrCat(flags.subject_curve_key, " belongs to origin ",
                                                     curve->origin, ", not --subject ",
                                                     flags.subject));
    }
    request.subject_curve_key = curve->key;
  }
  request.audience = flags.audience;
  absl::StatusOr<auth::PermissionSet> permissions =
      auth::ParsePermissions(absl::StrJoin(flags.permissions, ","));
  if (!permissions.ok()) return permissions.status();
  request.permissions = *permissions;
  if (!flags.scope.empty()) {
    absl::StatusOr<auth::ShardScope> scope = auth::ParseScope(absl::StrJoin(flags.scope, ";"));
    if (!scope.ok()) return scope.status();
    request.scope = *scope;
  }
  absl::StatusOr<ModelFacts> model = ReadModelFacts(flags.model);
  if (!model.ok()) return model.status();
  request.model_hash = model->hash;
  // A scope that holds nothing of this model would only be refused later, at every hello.
  if (absl::Status s =
          request.scope.ClipToModel(model->extent.n_layers, model->extent.n_experts).status();
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::chrono::seconds> ttl = auth::ParseTtl(flags.ttl);
  if (!ttl.ok()) return ttl.status();
  request.ttl = *ttl;
  request.not_before = std::chrono::system_clock::now();
  absl::StatusOr<std::string> token = auth::IssueToken(*issuer, request);
  if (!token.ok()) return token.status();
  absl::PrintF("%s\n", *token);
  return absl::OkStatus();
}

void PrintClaims(const auth::TokenClaims& c) {
  absl::PrintF("token id     %s\n", c.TokenIdHex());
  absl::PrintF("issuer       %s (key %s)\n", c.issuer_origin, auth::HexEncode(c.issuer_key));
  absl::PrintF("subject      %s (key %s)\n", c.subject_origin, auth::HexEncode(c.subject_key));
  absl::PrintF("transport    %s\n", c.subject_curve_key
                                        ? auth::Z85EncodeKey(*c.subject_curve_key)
                                        : std::string("any key the hello proof names"));
  absl::PrintF("audience     %s\n", c.audience.empty() ? "any cluster" : c.audience);
  absl::PrintF("model        %s\n", HexDigest(c.model_hash));
  absl::PrintF("permissions  %s\n", c.permissions.ToString());
  absl::PrintF("scope        %s\n", c.scope.ToString());
  absl::PrintF("not before   %s\n", auth::FormatUnixTime(c.not_before));
  absl::PrintF("expires      %s\n", auth::FormatUnixTime(c.expires_at));
}

absl::Status RunInspect(const std::string& arg) {
  absl::StatusOr<std::string> text = auth::ReadTokenArgument(arg);
  if (!text.ok()) return text.status();
  absl::StatusOr<auth::ParsedToken> token = auth::ParseToken(*text);
  if (!token.ok()) return token.status();
  PrintClaims(token->claims);
  absl::PrintF("signature    not checked (shardrun token verify TOKEN --trust ISSUER.pub)\n");
  return absl::OkStatus();
}

absl::Status RunVerify(const VerifyFlags& flags) {
  absl::StatusOr<std::string> text = auth::ReadTokenArgument(flags.token);
  if (!text.ok()) return text.status();
  auth::TrustPolicy policy;
  for (const std::string& path : flags.trust) {
    absl::StatusOr<auth::SignPublicKey> key = auth::LoadSignPublicKey(path);
    if (!key.ok()) return key.status();
    policy.trusted_issuers.push_back(*key);
  }
  policy.audience = flags.audience;
  policy.clock_skew = std::chrono::seconds(flags.clock_skew_s);
  if (!flags.revoked.empty()) {
    policy.revocations = std::make_shared<auth::RevocationList>(flags.revoked);
  }
  auth::TokenUse use;
  if (!flags.model.empty()) {
    absl::StatusOr<ModelFacts> model = ReadModelFacts(flags.model);
    if (!model.ok()) return model.status();
    use.model_hash = model->hash;
    use.model = model->extent;
  }
  if (!flags.permission.empty()) {
    use.permission = auth::PermissionFromName(flags.permission);
    if (!use.permission) {
      return absl::InvalidArgumentError(
          absl::StrCat("--perm ", flags.permission, ": expected host_shard or infer"));
    }
  }
  const auth::TokenVerifier verifier(std::move(policy));
  absl::StatusOr<auth::VerifiedToken> verified = verifier.Verify(*text, use);
  if (!verified.ok()) return verified.status();
  const auth::TokenClaims& c = verified->claims;
  absl::PrintF("valid: %s may %s (%s) until %s%s\n", c.subject_origin, c.permissions.ToString(),
               verified->scope.ToString(), auth::FormatUnixTime(c.expires_at),
               flags.model.empty() ? "; model not checked (--model)" : "");
  return absl::OkStatus();
}

void Report(const absl::Status& status, int* exit_code) {
  if (status.ok()) return;
  spdlog::error("{}", std::string(status.message()));
  *exit_code = 1;
}

}  // namespace

void AddTokenCommand(CLI::App& app, int* exit_code) {
  CLI::App* token = app.add_subcommand("token", "Issue, inspect and verify permission tokens");
  token->require_subcommand(1);

  auto issue = std::make_shared<IssueFlags>();
  CLI::App* cmd = token->add_subcommand(
      "issue", "Sign a token that lets SUBJECT hold shards of (host_shard) or run (infer) MODEL");
  cmd->add_option("--key", issue->key, "The model owner's sign.key")->required();
  cmd->add_option("--subject", issue->subject, "The subject's origin: https://b.example")
      ->required();
  cmd->add_option("--subject-key", issue->subject_key, "The subject's sign.pub")->required();
  cmd->add_option("--subject-curve-key", issue->subject_curve_key,
                  "The subject's curve.pub: pins its transport key (default: any it proves)");
  cmd->add_option("--perm", issue->permissions, "host_shard, infer (repeatable, or a|b)")
      ->required();
  cmd->add_option("--model", issue->model, "The model file (its SHA-256 goes in the token)")
      ->required();
  cmd->add_option("--ttl", issue->ttl, "Lifetime: 90s, 30m, 1h, 7d")->capture_default_str();
  cmd->add_option("--scope", issue->scope,
                  "What the subject may hold: layers=0-11, experts=0-3,5 (repeatable; default: "
                  "the whole model)");
  cmd->add_option("--audience", issue->audience, "The cluster the token is for (default: any)");
  cmd->callback([issue, exit_code] { Report(RunIssue(*issue), exit_code); });

  auto inspect = std::make_shared<std::string>();
  cmd = token->add_subcommand("inspect", "Show what a token says (without checking it)");
  cmd->add_option("token", *inspect, "The token, @FILE or - (stdin)")->required();
  cmd->callback([inspect, exit_code] { Report(RunInspect(*inspect), exit_code); });

  auto verify = std::make_shared<VerifyFlags>();
  cmd = token->add_subcommand("verify",
                              "Check a token; exits non-zero with the reason when it is not valid");
  cmd->add_option("token", verify->token, "The token, @FILE or - (stdin)")->required();
  cmd->add_option("--trust", verify->trust, "A trusted issuer's sign.pub (repeatable)")->required();
  cmd->add_option("--model", verify->model, "The model file the token must be for");
  cmd->add_option("--audience", verify->audience, "This cluster's name");
  cmd->add_option("--perm", verify->permission, "A permission the token must grant");
  cmd->add_option("--revoked", verify->revoked, "Revocation list: one token id per line");
  cmd->add_option("--clock-skew", verify->clock_skew_s, "Tolerated clock difference, seconds")
      ->capture_default_str();
  cmd->callback([verify, exit_code] { Report(RunVerify(*verify), exit_code); });
}

}  // namespace shardrun
