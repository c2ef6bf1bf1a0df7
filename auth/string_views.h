// Debian's abseil has an absl::string_view of its own that std::string_view does not
// convert to or from; these spell the conversions out.
#ifndef SHARDRUN_AUTH_STRING_VIEWS_H_
#define SHARDRUN_AUTH_STRING_VIEWS_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace shardrun::auth {

inline absl::string_view ToAbsl(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view ToStd(absl::string_view s) { return {s.data(), s.size()}; }

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_STRING_VIEWS_H_
