// A token as the command line takes it: the text itself, @FILE, or - for stdin.
#ifndef SHARDRUN_AUTH_TOKEN_TEXT_H_
#define SHARDRUN_AUTH_TOKEN_TEXT_H_

#include <string>

#include "absl/status/statusor.h"

namespace shardrun::auth {

// The token text of `arg`, surrounding whitespace removed; reads at most a little more than
// a token can be (the parser refuses the rest).
absl::StatusOr<std::string> ReadTokenArgument(const std::string& arg);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_TOKEN_TEXT_H_
