#include "auth/key_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "auth/encoding.h"
#include "auth/origin.h"
#include "auth/string_views.h"

namespace shardrun::auth {
namespace {

constexpr size_t kMaxKeyFileBytes = 4096;

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Writes `text` to `path` with mode 0600: a private temporary file in the same directory,
// synced, then renamed (overwrite) or hard-linked (no overwrite: link fails if `path` exists,
// without a window where another writer could slip in).
absl::Status WritePrivateFile(const std::string& path, const std::string& text, bool overwrite) {
  std::string tmp = path + ".tmp-XXXXXX";
  const int fd = mkstemp(tmp.data());  // mode 0600, O_EXCL
  if (fd < 0) return ErrnoError("cannot create a temporary file for", path);
  bool ok = fchmod(fd, 0600) == 0;  // explicit: mkstemp's mode is 0600 only under POSIX 2008
  for (size_t done = 0; ok && done < text.size();) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && fsync(fd) == 0;
  const int saved_errno = errno;
  ok = close(fd) == 0 && ok;
  if (!ok) {
    errno = saved_errno;
    absl::Status status = ErrnoError("cannot write", tmp);
    unlink(tmp.c_str());
    return status;
  }
  if (overwrite) {
    if (rename(tmp.c_str(), path.c_str()) != 0) {
      absl::Status status = ErrnoError("cannot rename a temporary file to", path);
      unlink(tmp.c_str());
      return status;
    }
    return absl::OkStatus();
  }
  const int linked = link(tmp.c_str(), path.c_str());
  const int link_errno = errno;
  unlink(tmp.c_str());
  if (linked != 0) {
    if (link_errno == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat(path, " exists; refusing to overwrite a key (--force replaces it)"));
    }
    errno = link_errno;
    return ErrnoError("cannot create", path);
  }
  return absl::OkStatus();
}

std::string KeyFileText(std::string_view description, std::string_view kind,
                        const std::string& origin, const std::string& public_text,
                        const std::optional<std::string>& secret_text) {
  std::string text = absl::StrCat("# shardrun key file (", std::string(description), ").",
                                  secret_text ? " Keep this file private." : "", "\n");
  absl::StrAppend(&text, "kind: ", std::string(kind), "\norigin: ", origin,
                  "\npublic: ", public_text, "\n");
  if (secret_text) absl::StrAppend(&text, "secret: ", *secret_text, "\n");
  return text;
}

// A key file's fields after the checks every kind shares.
struct KeyFileFields {
  std::string origin;
  std::string public_text;
  std::string secret_text;  // empty for public kinds
};

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, bool secret) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open key file", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    absl::Status status = ErrnoError("cannot stat", path);
    close(fd);
    return status;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > static_cast<off_t>(kMaxKeyFileBytes)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a key file (not a regular file of at most 4 KiB)"));
  }
  if (secret && (st.st_mode & 077) != 0) {
    close(fd);
    return absl::PermissionDeniedError(
        absl::StrFormat("%s holds a secret key but others may read it (mode %04o): chmod 600 %s",
                        path, st.st_mode & 07777, path));
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  close(fd);
  text.resize(done);
  return text;
}

absl::StatusOr<KeyFileFields> ReadKeyFile(const std::string& path, std::string_view kind) {
  const bool secret = kind.ends_with("-secret");
  absl::StatusOr<std::string> text = ReadSmallFile(path, secret);
  if (!text.ok()) return text.status();
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::string(why)));
  };
  std::map<std::string, std::string, std::less<>> fields;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    line = absl::StripTrailingAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const size_t colon = line.find(": ");
    if (colon == absl::string_view::npos) return bad("expected \"name: value\" lines");
    const std::string name(line.substr(0, colon));
    if (name != "kind" && name != "origin" && name != "public" && name != "secret") {
      return bad(absl::StrCat("unknown field \"", name, "\""));
    }
    if (!fields.emplace(name, std::string(line.substr(colon + 2))).second) {
      return bad(absl::StrCat("field \"", name, "\" appears twice"));
    }
  }
  auto it = fields.find("kind");
  if (it == fields.end()) return bad("no \"kind\" line: not a shardrun key file");
  if (it->second != kind) {
    return bad(
        absl::StrCat("holds a ", it->second, " key where a ", std::string(kind), " key is needed"));
  }
  KeyFileFields out;
  for (const char* required : {"origin", "public"}) {
    if (!fields.contains(required)) return bad(absl::StrCat("no \"", required, "\" line"));
  }
  out.origin = fields["origin"];
  if (absl::Status s = ValidateOrigin(out.origin); !s.ok()) return bad(ToStd(s.message()));
  out.public_text = fields["public"];
  if (secret != fields.contains("secret")) {
    return bad(secret ? "no \"secret\" line" : "a public key file must not hold a secret");
  }
  if (secret) out.secret_text = fields["secret"];
  return out;
}

template <size_t N>
absl::StatusOr<std::array<uint8_t, N>> DecodeKey(const std::string& path, std::string_view field,
                                                 const std::string& text, bool z85) {
  absl::StatusOr<std::string> bytes = z85 ? Z85DecodeKey(text) : HexDecode(text);
  if (bytes.ok() && bytes->size() != N) {
    bytes = absl::InvalidArgumentError(absl::StrCat("expected ", N, " bytes"));
  }
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": bad ", std::string(field), " key: ", std::string(bytes.status().message())));
  }
  std::array<uint8_t, N> key;
  std::memcpy(key.data(), bytes->data(), N);
  return key;
}

}  // namespace

KeyDirectory KeyPaths(const std::string& dir) {
  return {dir + "/sign.key", dir + "/sign.pub", dir + "/curve.key", dir + "/curve.pub"};
}

absl::Status WriteKeyDirectory(const std::string& dir, const SignKeyPair& sign,
                               const CurveKeyPair& curve, bool overwrite) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return ErrnoError("cannot create", dir);
  const KeyDirectory paths = KeyPaths(dir);
  if (!overwrite) {
    // All or nothing: a directory with one new and three old keys would be worse than none.
    for (const std::string* p :
         {&paths.sign_secret, &paths.sign_public, &paths.curve_secret, &paths.curve_public}) {
      if (access(p->c_str(), F_OK) == 0) {
        return absl::AlreadyExistsError(
            absl::StrCat(*p, " exists; refusing to overwrite keys (--force replaces them)"));
      }
    }
  }
  if (absl::Status s = WriteSignSecretKey(paths.sign_secret, sign, overwrite); !s.ok()) return s;
  if (absl::Status s = WriteSignPublicKey(paths.sign_public, sign.Public(), overwrite); !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteCurveSecretKey(paths.curve_secret, curve, overwrite); !s.ok()) {
    return s;
  }
  return WriteCurvePublicKey(paths.curve_public, curve.Public(), overwrite);
}

absl::Status WriteSignSecretKey(const std::string& path, const SignKeyPair& pair, bool overwrite) {
  std::string secret = HexEncode(pair.Seed());
  absl::Status status =
      WritePrivateFile(path,
                       KeyFileText("Ed25519 signing key pair", "sign-secret", pair.origin,
                                   HexEncode(pair.public_key), secret),
                       overwrite);
  std::fill(secret.begin(), secret.end(), '\0');
  return status;
}

absl::Status WriteSignPublicKey(const std::string& path, const SignPublicKey& key, bool overwrite) {
  return WritePrivateFile(path,
                          KeyFileText("Ed25519 signing public key", "sign-public", key.origin,
                                      HexEncode(key.key), std::nullopt),
                          overwrite);
}

absl::Status WriteCurveSecretKey(const std::string& path, const CurveKeyPair& pair,
                                 bool overwrite) {
  std::string secret = Z85EncodeKey(pair.secret_key);
  absl::Status status =
      WritePrivateFile(path,
                       KeyFileText("Curve25519 transport key pair, Z85", "curve-secret",
                                   pair.origin, Z85EncodeKey(pair.public_key), secret),
                       overwrite);
  std::fill(secret.begin(), secret.end(), '\0');
  return status;
}

absl::Status WriteCurvePublicKey(const std::string& path, const CurvePublicKey& key,
                                 bool overwrite) {
  return WritePrivateFile(path,
                          KeyFileText("Curve25519 transport public key, Z85", "curve-public",
                                      key.origin, Z85EncodeKey(key.key), std::nullopt),
                          overwrite);
}

absl::StatusOr<SignKeyPair> LoadSignSecretKey(const std::string& path) {
  absl::StatusOr<KeyFileFields> fields = ReadKeyFile(path, "sign-secret");
  if (!fields.ok()) return fields.status();
  auto public_key = DecodeKey<kSignPublicKeyBytes>(path, "public", fields->public_text, false);
  if (!public_key.ok()) return public_key.status();
  auto seed = DecodeKey<32>(path, "secret", fields->secret_text, false);
  if (!seed.ok()) return seed.status();
  SignKeyPair pair = SignKeyPairFromSeed(fields->origin, *seed);
  std::fill(seed->begin(), seed->end(), 0);
  if (pair.public_key != *public_key) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the public key does not belong to the secret key"));
  }
  return pair;
}

absl::StatusOr<SignPublicKey> LoadSignPublicKey(const std::string& path) {
  absl::StatusOr<KeyFileFields> fields = ReadKeyFile(path, "sign-public");
  if (!fields.ok()) return fields.status();
  auto key = DecodeKey<kSignPublicKeyBytes>(path, "public", fields->public_text, false);
  if (!key.ok()) return key.status();
  return SignPublicKey{fields->origin, *key};
}

absl::StatusOr<CurveKeyPair> LoadCurveSecretKey(const std::string& path) {
  absl::StatusOr<KeyFileFields> fields = ReadKeyFile(path, "curve-secret");
  if (!fields.ok()) return fields.status();
  auto public_key = DecodeKey<kCurveKeyBytes>(path, "public", fields->public_text, true);
  if (!public_key.ok()) return public_key.status();
  auto secret_key = DecodeKey<kCurveKeyBytes>(path, "secret", fields->secret_text, true);
  if (!secret_key.ok()) return secret_key.status();
  CurveKeyPair pair;
  pair.origin = fields->origin;
  pair.public_key = *public_key;
  pair.secret_key = *secret_key;
  std::fill(secret_key->begin(), secret_key->end(), 0);
  if (!CurveKeyPairConsistent(pair)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the public key does not belong to the secret key"));
  }
  return pair;
}

absl::StatusOr<CurvePublicKey> LoadCurvePublicKey(const std::string& path) {
  absl::StatusOr<KeyFileFields> fields = ReadKeyFile(path, "curve-public");
  if (!fields.ok()) return fields.status();
  auto key = DecodeKey<kCurveKeyBytes>(path, "public", fields->public_text, true);
  if (!key.ok()) return key.status();
  return CurvePublicKey{fields->origin, *key};
}

}  // namespace shardrun::auth
