#include "auth/file_stamp.h"

#include <sys/stat.h>

namespace shardrun::auth {

std::optional<FileStamp> StampOf(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileStamp{st.st_dev, st.st_ino, st.st_size,
                   int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec,
                   S_ISREG(st.st_mode)};
}

}  // namespace shardrun::auth
