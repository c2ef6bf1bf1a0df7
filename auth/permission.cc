#include "auth/permission.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "auth/string_views.h"

namespace shardrun::auth {

std::string_view PermissionName(Permission p) {
  switch (p) {
    case Permission::kHostShard:
      return "host_shard";
    case Permission::kInfer:
      return "infer";
  }
  return "unknown";
}

std::optional<Permission> PermissionFromName(std::string_view name) {
  if (name == "host_shard") return Permission::kHostShard;
  if (name == "infer") return Permission::kInfer;
  return std::nullopt;
}

std::string PermissionSet::ToString() const {
  std::string out;
  for (Permission p : {Permission::kHostShard, Permission::kInfer}) {
    if (Has(p)) absl::StrAppend(&out, out.empty() ? "" : ",", std::string(PermissionName(p)));
  }
  return out.empty() ? "none" : out;
}

absl::StatusOr<PermissionSet> ParsePermissions(std::string_view text) {
  PermissionSet set;
  for (absl::string_view name : absl::StrSplit(ToAbsl(text), absl::ByAnyChar(",|"))) {
    std::optional<Permission> p = PermissionFromName(ToStd(name));
    if (!p) {
      return absl::InvalidArgumentError(absl::StrCat("unknown permission \"", std::string(name),
                                                     "\": expected host_shard or infer"));
    }
    set.Add(*p);
  }
  return set;
}

}  // namespace shardrun::auth
