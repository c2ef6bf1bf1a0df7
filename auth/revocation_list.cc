#include "auth/revocation_list.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/encoding.h"
#include "spdlog/spdlog.h"

namespace shardrun::auth {
namespace {

constexpr off_t kMaxListBytes = off_t{16} << 20;

}  // namespace

absl::Status RevocationList::Check(const TokenId& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (absl::Status s = RefreshLocked(); !s.ok()) return s;
  if (revoked_.contains(id)) {
    return absl::PermissionDeniedError(
        absl::StrCat("token ", HexEncode(id), " is revoked (listed in ", path_, ")"));
  }
  return absl::OkStatus();
}

absl::Status RevocationList::Refresh() {
  std::lock_guard<std::mutex> lock(mutex_);
  return RefreshLocked();
}

size_t RevocationList::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  return revoked_.size();
}

absl::Status RevocationList::RefreshLocked() {
  const std::optional<FileStamp> stamp = StampOf(path_);
  if (!stamp) {
    stamp_.reset();
    load_error_ = absl::UnavailableError(absl::StrCat("revocation list ", path_,
                                                      " cannot be read (", std::strerror(errno),
                                                      "); refusing every token until it can"));
    return load_error_;
  }
  if (stamp == stamp_) return load_error_;
  stamp_ = stamp;

  auto fail = [&](const std::string& why) {
    load_error_ = absl::UnavailableError(absl::StrCat("revocation list ", path_, ": ", why,
                                                      "; refusing every token until it is fixed"));
    spdlog::error("{}", std::string(load_error_.message()));
    return load_error_;
  };
  if (!stamp->regular || stamp->size > kMaxListBytes) {
    return fail("not a regular file of at most 16 MiB");
  }
  std::ifstream in(path_, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) return fail("read error");

  std::set<TokenId> revoked;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text.str(), '\n')) {
    ++line_number;
    line = line.substr(0, line.find('#'));
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    absl::StatusOr<std::string> bytes = HexDecode(std::string_view(line.data(), line.size()));
    if (!bytes.ok() || bytes->size() != kTokenIdBytes) {
      return fail(absl::StrCat("line ", line_number, " is not a token id (32 hex digits)"));
    }
    TokenId id;
    std::memcpy(id.data(), bytes->data(), id.size());
    revoked.insert(id);
  }
  if (revoked != revoked_ || !load_error_.ok()) {
    spdlog::info("revocation list {}: {} revoked token(s)", path_, revoked.size());
  }
  revoked_ = std::move(revoked);
  load_error_ = absl::OkStatus();
  return load_error_;
}

}  // namespace shardrun::auth
