#include "partitioner/byte_size.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace shardrun {
namespace {

constexpr std::array<std::string_view, 5> kUnits = {"B", "KiB", "MiB", "GiB", "TiB"};

// Drops trailing zeros of a fixed-point number: "1.50" -> "1.5", "512.0" -> "512".
std::string TrimZeros(std::string number) {
  if (number.find('.') == std::string::npos) return number;
  while (number.back() == '0') number.pop_back();
  if (number.back() == '.') number.pop_back();
  return number;
}

absl::Status BadSize(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "bad memory size \"", std::string(text), "\": ", std::string(why),
      " (expected a number with an optional unit K, M, G or T, e.g. 512M, 1.5GiB, 4096)"));
}

std::string_view StripSpaces(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::string FormatBytes(int64_t bytes) {
  if (bytes < 0) {
    // Negate in unsigned arithmetic so that INT64_MIN does not overflow.
    const uint64_t magnitude = 0 - static_cast<uint64_t>(bytes);
    if (magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::StrCat("-", magnitude, " B");
    }
    return absl::StrCat("-", FormatBytes(static_cast<int64_t>(magnitude)));
  }
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes);
  size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kUnits.size()) {
    value /= 1024.0;
    ++unit;
  }
  // Three significant digits; rounding can carry into the next unit (1023.9 KiB -> 1 MiB).
  const int decimals = value >= 100.0 ? 0 : value >= 10.0 ? 1 : 2;
  const std::string number = absl::StrFormat("%.*f", decimals, value);
  if (number == "1024" && unit + 1 < kUnits.size()) {
    return absl::StrCat("1 ", std::string(kUnits[unit + 1]));
  }
  return absl::StrCat(TrimZeros(number), " ", std::string(kUnits[unit]));
}

absl::StatusOr<int64_t> ParseByteSize(std::string_view text) {
  const std::string_view rest = StripSpaces(text);
  if (rest.empty()) return BadSize(text, "empty");
  size_t digits_end = 0;
  int dots = 0;
  while (digits_end < rest.size() && (IsDigit(rest[digits_end]) || rest[digits_end] == '.')) {
    if (rest[digits_end] == '.') ++dots;
    ++digits_end;
  }
  const std::string_view number = rest.substr(0, digits_end);
  if (number.empty() || number == "." || dots > 1) {
    return BadSize(text, rest[0] == '-' ? "negative" : "no number");
  }
  std::string unit(StripSpaces(rest.substr(digits_end)));
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));

  struct Unit {
    std::string_view spelling;
    int shift;  // the unit is 2^shift bytes
  };
  static constexpr Unit kSpellings[] = {
      {"", 0},     {"b", 0},  {"k", 10},  {"kb", 10},  {"kib", 10}, {"m", 20},  {"mb", 20},
      {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}, {"t", 40},   {"tb", 40}, {"tib", 40},
  };
  int shift = -1;
  for (const Unit& u : kSpellings) {
    if (unit == u.spelling) shift = u.shift;
  }
  if (shift < 0) return BadSize(text, absl::StrCat("unknown unit \"", unit, "\""));

  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  if (dots == 0) {
    int64_t count = 0;
    const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), count);
    if (error != std::errc() || end != number.data() + number.size()) {
      return BadSize(text, "too large");
    }
    if (count > (kMax >> shift)) return BadSize(text, "too large");
    return count << shift;
  }
  if (shift == 0) return BadSize(text, "not a whole number of bytes");
  double value = 0;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (error != std::errc() || end != number.data() + number.size() || !std::isfinite(value)) {
    return BadSize(text, "no number");
  }
  const double bytes = std::round(std::ldexp(value, shift));
  // 2^63 is the first double above every int64_t.
  if (bytes >= std::ldexp(1.0, 63)) return BadSize(text, "too large");
  return static_cast<int64_t>(bytes);
}

}  // namespace shardrun
