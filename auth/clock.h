// The wall clock that token lifetimes and challenge expiry are measured against. A function
// rather than a direct call so that tests can check expiry at chosen instants.
#ifndef SHARDRUN_AUTH_CLOCK_H_
#define SHARDRUN_AUTH_CLOCK_H_

#include <chrono>
#include <functional>

namespace shardrun::auth {

using WallClock = std::function<std::chrono::system_clock::time_point()>;

inline WallClock SystemClock() {
  return [] { return std::chrono::system_clock::now(); };
}

inline int64_t UnixSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

inline int64_t UnixMillis(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_CLOCK_H_
