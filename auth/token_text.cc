#include "auth/token_text.h"

#include <cstdio>
#include <iostream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "auth/token_codec.h"

namespace shardrun::auth {

absl::StatusOr<std::string> ReadTokenArgument(const std::string& arg) {
  std::string text = arg;
  if (arg == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else if (!arg.empty() && arg.front() == '@') {
    std::FILE* f = std::fopen(arg.c_str() + 1, "rb");
    if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", arg.substr(1)));
    char buf[kMaxTokenTextBytes + 64];
    const size_t n = std::fread(buf, 1, sizeof(buf), f);
    std::fclose(f);
    text.assign(buf, n);
  }
  return std::string(absl::StripAsciiWhitespace(text));
}

}  // namespace shardrun::auth
