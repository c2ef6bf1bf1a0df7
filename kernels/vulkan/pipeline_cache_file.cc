#include "kernels/vulkan/pipeline_cache_file.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/vulkan/shaders.h"

namespace shardrun {

std::string PipelineCachePath(const VkPhysicalDeviceProperties& props, uint64_t shader_hash) {
  std::string dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] != '\0') {
    dir = absl::StrCat(xdg, "/shardrun");
  } else if (const char* home = std::getenv("HOME"); home != nullptr && home[0] != '\0') {
    dir = absl::StrCat(home, "/.cache/shardrun");
  } else {
    return "";
  }
  std::string uuid;
  for (uint8_t byte : props.pipelineCacheUUID) absl::StrAppendFormat(&uuid, "%02x", byte);
  return absl::StrFormat("%s/vulkan-pipelines-%04x-%04x-%x-%s-%016x.bin", dir, props.vendorID,
                         props.deviceID, props.driverVersion, uuid, shader_hash);
}

std::vector<uint8_t> ReadPipelineCache(const std::string& path) {
  if (path.empty()) return {};
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

absl::Status WritePipelineCache(const std::string& path, std::span<const uint8_t> data) {
  if (path.empty()) return absl::OkStatus();
  const std::filesystem::path target(path);
  std::error_code error;
  std::filesystem::create_directories(target.parent_path(), error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", target.parent_path().string(), ": ", error.message()));
  }
  // Unique per process, so concurrent workers never write into one temporary file.
  const std::string temporary = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", temporary));
  }
  std::filesystem::rename(temporary, target, error);
  if (error) {
    std::filesystem::remove(temporary, error);
    return absl::InternalError(absl::StrCat("cannot rename ", temporary, " to ", path));
  }
  return absl::OkStatus();
}

uint64_t EmbeddedShaderHash() {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (const ShaderCode& shader : EmbeddedShaders()) {
    for (size_t i = 0; i < shader.word_count; ++i) {
      for (int b = 0; b < 4; ++b) {
        hash ^= (shader.words[i] >> (8 * b)) & 0xffu;
        hash *= 0x100000001b3ull;
      }
    }
  }
  return hash;
}

}  // namespace shardrun
