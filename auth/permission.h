// What a token allows its subject to do, and the names the command line uses for it.
#ifndef SHARDRUN_AUTH_PERMISSION_H_
#define SHARDRUN_AUTH_PERMISSION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace shardrun::auth {

enum class Permission : uint8_t {
  kHostShard = 1,  // hold shards of the model (a worker)
  kInfer = 2,      // run inference (a client)
};

std::string_view PermissionName(Permission p);  // "host_shard", "infer"
std::optional<Permission> PermissionFromName(std::string_view name);

class PermissionSet {
 public:
  PermissionSet() = default;
  void Add(Permission p) { bits_ |= static_cast<uint8_t>(p); }
  bool Has(Permission p) const { return (bits_ & static_cast<uint8_t>(p)) != 0; }
  bool empty() const { return bits_ == 0; }
  std::string ToString() const;  // "host_shard,infer"; "none" when empty
  bool operator==(const PermissionSet&) const = default;

 private:
  uint8_t bits_ = 0;
};

// "host_shard", "infer", "host_shard,infer" or "host_shard|infer".
absl::StatusOr<PermissionSet> ParsePermissions(std::string_view text);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_PERMISSION_H_
