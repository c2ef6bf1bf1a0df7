// The Curve25519 transport keys a process currently lets connect: the operator's
// (--allow-keys, no expiry) and those admission proved with a token (until the token
// expires). Shared between the ZAP handler's thread, which consults it at each connection,
// and the thread that admits peers and extends it, hence the lock.
#ifndef SHARDRUN_AUTH_KEY_ALLOW_LIST_H_
#define SHARDRUN_AUTH_KEY_ALLOW_LIST_H_

#include <chrono>
#include <map>
#include <optional>
#include <shared_mutex>
#include <string>

#include "auth/keys.h"

namespace shardrun::auth {

class KeyAllowList {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  // Adds or replaces `key`. `label` (an origin) appears in logs.
  void Add(const CurveKeyBytes& key, std::string label, TimePoint expires = TimePoint::max());
  void Remove(const CurveKeyBytes& key);
  // The key's label when it is listed and has not expired at `now`.
  std::optional<std::string> Find(const CurveKeyBytes& key, TimePoint now) const;
  bool Contains(const CurveKeyBytes& key, TimePoint now) const {
    return Find(key, now).has_value();
  }
  // Drops expired entries; returns how many.
  size_t RemoveExpired(TimePoint now);
  size_t size() const;

 private:
  struct Entry {
    std::string label;
    TimePoint expires;
  };
  mutable std::shared_mutex mutex_;
  std::map<CurveKeyBytes, Entry> keys_;
};

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_KEY_ALLOW_LIST_H_
