#include "auth/encoding.h"

#include <sodium.h>
#include <zmq.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace shardrun::auth {

std::string HexEncode(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::StatusOr<std::string> HexDecode(std::string_view text) {
  if (text.size() % 2 != 0) {
    return absl::InvalidArgumentError("hex text has an odd number of digits");
  }
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out(text.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(text[2 * i]), lo = digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError("hex text holds a character other than 0-9a-f");
    }
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::string Base64UrlEncode(std::string_view bytes) {
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(), AsBytes(bytes).data(), bytes.size(), kVariant);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

absl::StatusOr<std::string> Base64UrlDecode(std::string_view text) {
  // The alphabet is checked here, not only by libsodium: its constant-time character decoder
  // assumes ASCII, and mapped some bytes >= 0x80 (negative chars) to base64 digits, which
  // made a second spelling of the same bytes (the token fuzzer found it).
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return absl::InvalidArgumentError("not base64url (unpadded) text");
    }
  }
  std::string out(text.size() / 4 * 3 + 3, '\0');
  size_t length = 0;
  const char* end = nullptr;
  // libsodium checks the alphabet and refuses non-zero padding bits; `end` catches a
  // stray character where it stops early.
  if (sodium_base642bin(reinterpret_cast<uint8_t*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &length, &end,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    return absl::InvalidArgumentError("not base64url (unpadded) text");
  }
  out.resize(length);
  return out;
}

std::string Z85EncodeKey(std::span<const uint8_t, 32> key) {
  char text[41];
  zmq_z85_encode(text, key.data(), key.size());
  return std::string(text, 40);
}

absl::StatusOr<std::string> Z85DecodeKey(std::string_view text) {
  if (text.size() != 40) {
    return absl::InvalidArgumentError(
        absl::StrCat("a Z85 key has 40 characters, this one has ", text.size()));
  }
  const std::string terminated(text);  // zmq_z85_decode reads up to a NUL
  std::string key(32, '\0');
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(key.data()), terminated.c_str()) == nullptr) {
    return absl::InvalidArgumentError("not Z85 text");
  }
  return key;
}

}  // namespace shardrun::auth
