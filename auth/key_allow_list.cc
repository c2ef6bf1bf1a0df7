#include "auth/key_allow_list.h"

#include <mutex>

namespace shardrun::auth {

void KeyAllowList::Add(const CurveKeyBytes& key, std::string label, TimePoint expires) {
  std::unique_lock lock(mutex_);
  keys_[key] = Entry{std::move(label), expires};
}

void KeyAllowList::Remove(const CurveKeyBytes& key) {
  std::unique_lock lock(mutex_);
  keys_.erase(key);
}

std::optional<std::string> KeyAllowList::Find(const CurveKeyBytes& key, TimePoint now) const {
  std::shared_lock lock(mutex_);
  auto it = keys_.find(key);
  if (it == keys_.end() || now >= it->second.expires) return std::nullopt;
  return it->second.label;
}

size_t KeyAllowList::RemoveExpired(TimePoint now) {
  std::unique_lock lock(mutex_);
  return std::erase_if(keys_, [now](const auto& kv) { return now >= kv.second.expires; });
}

size_t KeyAllowList::size() const {
  std::shared_lock lock(mutex_);
  return keys_.size();
}

}  // namespace shardrun::auth
