#include "auth/allowed_keys.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "auth/encoding.h"
#include "auth/key_file.h"
#include "auth/origin.h"
#include "auth/string_views.h"

namespace shardrun::auth {
namespace {

constexpr char kKeyFileMarker[] = "# shardrun key file";

}  // namespace

absl::StatusOr<std::vector<CurvePublicKey>> ParseAllowedKeys(std::string_view text,
                                                             std::string_view source) {
  std::vector<CurvePublicKey> keys;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(ToAbsl(text), '\n')) {
    ++line_number;
    // A comment starts at a '#' that begins the line or follows a blank: Z85 keys have '#'
    // among their characters.
    line = absl::StripLeadingAsciiWhitespace(line);
    for (size_t at = line.find('#'); at != absl::string_view::npos; at = line.find('#', at + 1)) {
      if (at == 0 || line[at - 1] == ' ' || line[at - 1] == '\t') {
        line = line.substr(0, at);
        break;
      }
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string where = absl::StrCat(std::string(source), " line ", line_number);
    if (fields.size() > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected a Z85 key and an optional origin"));
    }
    absl::StatusOr<std::string> bytes = Z85DecodeKey(ToStd(fields[0]));
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": not a Curve25519 public key in Z85 (40 characters): ",
                       std::string(bytes.status().message())));
    }
    CurvePublicKey key;
    std::memcpy(key.key.data(), bytes->data(), key.key.size());
    if (fields.size() == 2) {
      if (absl::Status s = ValidateOrigin(ToStd(fields[1])); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", std::string(s.message())));
      }
      key.origin = std::string(fields[1]);
    } else {
      key.origin = "listed key";
    }
    keys.push_back(std::move(key));
  }
  return keys;
}

absl::StatusOr<std::vector<CurvePublicKey>> LoadAllowedKeys(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path, " (--allow-keys)"));
  std::string text;
  text.resize(kMaxAllowedKeysFileBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxAllowedKeysFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is larger than ", kMaxAllowedKeysFileBytes, " bytes"));
  }
  if (text.starts_with(kKeyFileMarker)) {
    absl::StatusOr<CurvePublicKey> key = LoadCurvePublicKey(path);
    if (!key.ok()) return key.status();
    return std::vector<CurvePublicKey>{*std::move(key)};
  }
  return ParseAllowedKeys(text, path);
}

}  // namespace shardrun::auth
