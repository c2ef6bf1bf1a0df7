// Origins name who owns a key, a token or a cluster: "https://a.example", as a browser tab's
// origin. Only the canonical form is accepted (lowercase scheme and host, no path, no default
// port spelled out) so that two spellings of one origin can never compare unequal.
#ifndef SHARDRUN_AUTH_ORIGIN_H_
#define SHARDRUN_AUTH_ORIGIN_H_

#include <string_view>

#include "absl/status/status.h"

namespace shardrun::auth {

inline constexpr size_t kMaxOriginBytes = 256;

// OK for "https://host" / "http://host[:port]" with a DNS name or IPv4 host; otherwise an
// InvalidArgument that names the problem.
absl::Status ValidateOrigin(std::string_view origin);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_ORIGIN_H_
