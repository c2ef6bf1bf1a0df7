// A file of revoked token ids (32 hex digits per line; '#' starts a comment), re-read
// whenever the file changes, so that revoking a token is an edit and takes effect on the
// next check without a restart.
//
// It fails closed: while the file is missing or malformed every check fails, since a broken
// list could otherwise silently un-revoke tokens.
#ifndef SHARDRUN_AUTH_REVOCATION_LIST_H_
#define SHARDRUN_AUTH_REVOCATION_LIST_H_

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "auth/file_stamp.h"
#include "auth/token_claims.h"

namespace shardrun::auth {

class RevocationList {
 public:
  explicit RevocationList(std::string path) : path_(std::move(path)) {}

  // OK when `id` is not listed; PermissionDenied "token <id> is revoked (listed in <file>)";
  // Unavailable when the file cannot be read or parsed. Re-reads the file first when its
  // inode, size or modification time changed since the last read. Thread-safe.
  absl::Status Check(const TokenId& id);

  // Re-reads now if the file changed; what Check does first.
  absl::Status Refresh();

  size_t size();  // ids listed at the last successful read
  const std::string& path() const { return path_; }

 private:
  absl::Status RefreshLocked();

  const std::string path_;
  std::mutex mutex_;
  std::optional<FileStamp> stamp_;  // of the last read, successful or not
  absl::Status load_error_ = absl::UnavailableError("revocation list not read yet");
  std::set<TokenId> revoked_;
};

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_REVOCATION_LIST_H_
