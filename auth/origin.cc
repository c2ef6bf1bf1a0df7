#include "auth/origin.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace shardrun::auth {

absl::Status ValidateOrigin(std::string_view origin) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("origin \"", std::string(origin.substr(0, 80)), "\": ", std::string(why)));
  };
  if (origin.size() > kMaxOriginBytes) return bad("longer than 256 bytes");
  std::string_view rest = origin;
  std::string_view default_port;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
    default_port = "443";
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
    default_port = "80";
  } else {
    return bad("expected https://host or http://host[:port]");
  }
  std::string_view host = rest, port;
  if (const size_t colon = rest.find(':'); colon != std::string_view::npos) {
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("no host");
  for (char c : host) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || c == '.')) {
      return bad("the host may hold only a-z, 0-9, '-' and '.' (no path, no upper case)");
    }
  }
  if (host.front() == '.' || host.back() == '.' || host.find("..") != std::string_view::npos) {
    return bad("empty label in the host");
  }
  if (rest.find(':') != std::string_view::npos) {
    // At most 5 digits are read, so the value cannot overflow.
    int value = port.empty() || port.size() > 5 ? -1 : 0;
    for (char c : port.substr(0, 5)) {
      if (!absl::ascii_isdigit(c)) value = -1;
      if (value >= 0) value = value * 10 + (c - '0');
    }
    if (port.empty() || port.front() == '0' || port.size() > 5 || value < 1 || value > 65535) {
      return bad("the port must be a number from 1 to 65535");
    }
    if (port == default_port) return bad("leave out the scheme's default port");
  }
  return absl::OkStatus();
}

}  // namespace shardrun::auth
