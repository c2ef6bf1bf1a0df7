#include "worker/weight_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "model/content_hash.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

std::string Hex(const std::string& bytes) {
  Sha256 hash{};
  std::copy_n(bytes.begin(), std::min(bytes.size(), hash.size()), hash.begin());
  return HexDigest(hash);
}

// Holds an exclusive flock on `fd` for its lifetime: workers on one host may share a cache
// directory, and so the copy's sizing and its manifest.
class FileLock {
 public:
  explicit FileLock(int fd) : fd_(fd) { flock(fd_, LOCK_EX); }
  ~FileLock() { flock(fd_, LOCK_UN); }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

std::string ManifestLine(const wire::FileRange& range) {
  return absl::StrCat(Hex(range.sha256()), " ", range.offset(), " ", range.bytes(), " ",
                      range.name());
}

}  // namespace

std::string DefaultWeightCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    return absl::StrCat(xdg, "/shardrun/weights");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : ".", "/.cache/shardrun/weights");
}

absl::StatusOr<std::unique_ptr<WeightCache>> WeightCache::Open(const std::string& dir,
                                                               const std::string& model_sha256_hex,
                                                               int64_t file_size) {
  if (file_size <= 0) return absl::InvalidArgumentError("weight cache: empty model file");
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("weight cache: cannot create ", dir, ": ", error.message()));
  }
  const std::string path = absl::StrCat(dir, "/", model_sha256_hex, ".model");
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("weight cache: cannot open ", path));
  {
    FileLock lock(fd);
    struct stat st {};
    // A file of another size is not a copy of this model: start it again.
    if (fstat(fd, &st) != 0 || st.st_size != file_size) {
      if ((st.st_size != 0 && ftruncate(fd, 0) != 0) || ftruncate(fd, file_size) != 0) {
        const int e = errno;
        close(fd);
        return absl::ErrnoToStatus(e, absl::StrCat("weight cache: cannot size ", path));
      }
    }
  }
  void* map = mmap(nullptr, static_cast<size_t>(file_size), PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    const int e = errno;
    close(fd);
    return absl::ErrnoToStatus(e, absl::StrCat("weight cache: cannot map ", path));
  }
  std::unique_ptr<WeightCache> cache(
      new WeightCache(path, absl::StrCat(dir, "/", model_sha256_hex, ".manifest"), fd,
                      static_cast<const uint8_t*>(map), static_cast<size_t>(file_size)));
  {
    FileLock lock(fd);
    cache->held_ = cache->ReadManifest();
  }
  return cache;
}

WeightCache::~WeightCache() {
  if (map_ != nullptr) munmap(const_cast<uint8_t*>(map_), size_);
  if (fd_ >= 0) close(fd_);
}

std::map<std::string, std::string> WeightCache::ReadManifest() const {
  std::map<std::string, std::string> lines;
  std::ifstream in(manifest_path_);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string sha, offset, bytes, name;
    if (fields >> sha >> offset >> bytes >> name) lines[name] = line;
  }
  return lines;
}

bool WeightCache::Holds(const wire::FileRange& range) const {
  auto it = held_.find(range.name());
  if (it == held_.end() || it->second != ManifestLine(range)) return false;
  const Sha256 hash = HashBytes({map_ + range.offset(), static_cast<size_t>(range.bytes())});
  return std::string(hash.begin(), hash.end()) == range.sha256();
}

std::vector<std::string> WeightCache::Missing(
    const google::protobuf::RepeatedPtrField<wire::FileRange>& ranges) {
  std::vector<std::string> missing;
  for (const wire::FileRange& range : ranges) {
    if (Holds(range)) continue;
    if (held_.erase(range.name()) > 0) {
      spdlog::warn("{}: cached range {} no longer matches its sha256; fetching it again", path_,
                   range.name());
    }
    missing.push_back(range.name());
  }
  return missing;
}

absl::Status WeightCache::Write(const wire::FileRange& range, int64_t offset,
                                std::span<const uint8_t> data) {
  if (offset < 0 || offset + static_cast<int64_t>(data.size()) > range.bytes() ||
      range.offset() + range.bytes() > static_cast<int64_t>(size_)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": chunk of ", range.name(), " at ", offset, " overruns it"));
  }
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = pwrite(fd_, data.data() + done, data.size() - done,
                             range.offset() + offset + static_cast<int64_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": write failed"));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WeightCache::Verify(const wire::FileRange& range) {
  const Sha256 hash = HashBytes({map_ + range.offset(), static_cast<size_t>(range.bytes())});
  if (std::string(hash.begin(), hash.end()) != range.sha256()) {
    held_.erase(range.name());
    return absl::DataLossError(absl::StrCat("tensor ", range.name(), ": received bytes hash to ",
                                            ShortDigest(hash), "..., expected ",
                                            Hex(range.sha256()).substr(0, 12), "..."));
  }
  held_[range.name()] = ManifestLine(range);
  return absl::OkStatus();
}

absl::Status WeightCache::Commit() {
  if (fsync(fd_) != 0) return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": fsync failed"));
  // Another worker sharing the directory may have committed since Open: keep its lines
  // (Missing re-hashes every range anyway), ours win.
  FileLock lock(fd_);
  std::map<std::string, std::string> lines = ReadManifest();
  for (const auto& [name, line] : held_) lines[name] = line;
  const std::string tmp = absl::StrCat(manifest_path_, ".", getpid(), ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [name, line] : lines) out << line << "\n";
    out.flush();
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  if (rename(tmp.c_str(), manifest_path_.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot rename ", tmp));
  }
  return absl::OkStatus();
}

}  // namespace shardrun
