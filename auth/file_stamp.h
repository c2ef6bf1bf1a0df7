// What tells a file's versions apart without reading it (device, inode, size, modification
// time): the operator's lists (--revocations, --allow-keys) are re-read when it changes, so an
// edit takes effect without a restart, and cost one stat() when it does not.
#ifndef SHARDRUN_AUTH_FILE_STAMP_H_
#define SHARDRUN_AUTH_FILE_STAMP_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace shardrun::auth {

struct FileStamp {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = -1;
  int64_t mtime_ns = -1;
  bool regular = false;  // a regular file (not a directory, a device, ...)
  bool operator==(const FileStamp&) const = default;
};

// The stamp of `path` now; nullopt when it cannot be stat'ed (errno says why).
std::optional<FileStamp> StampOf(const std::string& path);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_FILE_STAMP_H_
