// The operator's list of transport keys admitted without a token (--allow-keys FILE): the
// workers of the coordinator's own origin.
//
// FILE is either one curve.pub written by `shardrun keygen`, or a list with one key per line:
//
//   # same-origin workers
//   <40 Z85 characters>  https://a.example
//   <40 Z85 characters>                       (no origin: labelled "listed key")
//
// '#' at the start of a line or after a blank starts a comment ('#' is also one of Z85's
// characters); blank lines are ignored; anything else is an error naming its line.
#ifndef SHARDRUN_AUTH_ALLOWED_KEYS_H_
#define SHARDRUN_AUTH_ALLOWED_KEYS_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/keys.h"

namespace shardrun::auth {

inline constexpr size_t kMaxAllowedKeysFileBytes = 1 << 20;

// The keys of `text` in the list form (`source` names it in errors).
absl::StatusOr<std::vector<CurvePublicKey>> ParseAllowedKeys(std::string_view text,
                                                             std::string_view source);

// Reads `path` in either form.
absl::StatusOr<std::vector<CurvePublicKey>> LoadAllowedKeys(const std::string& path);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_ALLOWED_KEYS_H_
