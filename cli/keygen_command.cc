// `shardrun keygen --origin https://a.example --out DIR`: an origin's key pairs, Ed25519 for
// signing tokens and hello proofs and Curve25519 for CurveZMQ, as four files in DIR.
#include <memory>
#include <string>

#include "absl/strings/str_format.h"
#include "auth/key_file.h"
#include "auth/keys.h"
#include "auth/origin.h"
#include "cli/commands.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

struct KeygenFlags {
  std::string origin;
  std::string out;
  bool force = false;
};

absl::Status RunKeygen(const KeygenFlags& flags) {
  if (absl::Status s = auth::ValidateOrigin(flags.origin); !s.ok()) return s;
  const auth::SignKeyPair sign = auth::GenerateSignKeyPair(flags.origin);
  const auth::CurveKeyPair curve = auth::GenerateCurveKeyPair(flags.origin);
  if (absl::Status s = auth::WriteKeyDirectory(flags.out, sign, curve, flags.force); !s.ok()) {
    return s;
  }
  const auth::KeyDirectory paths = auth::KeyPaths(flags.out);
  absl::PrintF("origin       %s\n", flags.origin);
  absl::PrintF("sign.key     %s (secret: signs tokens and hello proofs)\n", paths.sign_secret);
  absl::PrintF("sign.pub     %s (key %s...)\n", paths.sign_public, sign.Public().Fingerprint());
  absl::PrintF("curve.key    %s (secret: transport)\n", paths.curve_secret);
  absl::PrintF("curve.pub    %s (%s)\n", paths.curve_public, curve.Public().Z85());
  return absl::OkStatus();
}

}  // namespace

void AddKeygenCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<KeygenFlags>();
  CLI::App* cmd = app.add_subcommand(
      "keygen",
      "Write an origin's key pairs: DIR/sign.key + sign.pub (Ed25519, tokens and proofs) and "
      "DIR/curve.key + curve.pub (Curve25519 in Z85, CurveZMQ). Files get mode 0600.");
  cmd->add_option("--origin", flags->origin, "The origin the keys belong to: https://a.example")
      ->required();
  cmd->add_option("--out", flags->out, "Directory for the four key files (created 0700)")
      ->required();
  cmd->add_flag("--force", flags->force, "Replace existing key files");
  cmd->callback([flags, exit_code] {
    if (absl::Status s = RunKeygen(*flags); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace shardrun
