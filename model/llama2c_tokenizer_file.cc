#include "model/llama2c_tokenizer_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "model/mapped_file.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// The ids run.c hard-codes: SentencePiece's llama vocabulary puts <unk>, <s>, </s> first.
constexpr int kUnkId = 0;
constexpr int kBosId = 1;
constexpr int kEosId = 2;
// Each record holds at least a score and a length.
constexpr size_t kRecordHeaderBytes = 8;

// SentencePiece names its byte-fallback pieces "<0xNN>" (two hex digits).
bool IsBytePiece(std::string_view piece) {
  return piece.size() == 6 && piece.substr(0, 3) == "<0x" && absl::ascii_isxdigit(piece[3]) &&
         absl::ascii_isxdigit(piece[4]) && piece[5] == '>';
}

TokenKind KindOf(int id, std::string_view piece) {
  if (id == kUnkId) return TokenKind::kUnknown;
  if (id == kBosId || id == kEosId) return TokenKind::kControl;
  if (IsBytePiece(piece)) return TokenKind::kByte;
  return TokenKind::kNormal;
}

// Reads a little-endian 32-bit value; memcpy because the file gives no alignment.
template <typename T>
T ReadScalar(const uint8_t* p) {
  static_assert(sizeof(T) == 4);
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

}  // namespace

absl::StatusOr<Vocabulary> ParseLlama2cTokenizer(std::string_view name, const uint8_t* data,
                                                 size_t size, int vocab_size) {
  // Debian's abseil has its own string_view, which StrCat does not take std's for.
  const absl::string_view file(name.data(), name.size());
  if (vocab_size < 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": vocab_size ", vocab_size, " is too small (unk, bos and eos are ids 0..2)"));
  }
  if (size < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": truncated: ", size, " bytes, the header alone needs 4"));
  }
  // Bounding the count by the file size first keeps a bogus vocab_size from reserving
  // gigabytes before the records are read.
  if (static_cast<uint64_t>(vocab_size) > (size - 4) / kRecordHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": truncated: ", size,
                                                   " bytes cannot hold ", vocab_size,
                                                   " tokens (the model's vocab_size)"));
  }
  const int32_t max_token_length = ReadScalar<int32_t>(data);
  if (max_token_length < 0 || static_cast<uint64_t>(max_token_length) > size) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": max_token_length ", max_token_length,
                                                   " is out of range for a ", size, "-byte file"));
  }

  Vocabulary vocab;
  vocab.style = VocabularyStyle::kLlama2c;
  vocab.bos_id = kBosId;
  vocab.eos_id = kEosId;
  vocab.unk_id = kUnkId;
  vocab.add_bos = true;
  vocab.add_space_prefix = true;
  vocab.pieces.reserve(vocab_size);
  vocab.scores.reserve(vocab_size);
  vocab.kinds.reserve(vocab_size);

  size_t offset = 4;
  for (int id = 0; id < vocab_size; ++id) {
    if (size - offset < kRecordHeaderBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": truncated: token ", id, " starts at byte ", offset, " of ", size));
    }
    const float score = ReadScalar<float>(data + offset);
    const int32_t length = ReadScalar<int32_t>(data + offset + 4);
    offset += kRecordHeaderBytes;
    if (std::isnan(score)) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": token ", id, " has a NaN score"));
    }
    if (length < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": token ", id, " has a negative length ", length));
    }
    if (length > max_token_length) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": token ", id, " has length ", length,
                                                     " > max_token_length ", max_token_length));
    }
    if (size - offset < static_cast<size_t>(length)) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": truncated: token ", id, " needs ",
                                                     length, " bytes at byte ", offset, " of ",
                                                     size));
    }
    std::string piece(reinterpret_cast<const char*>(data + offset), length);
    offset += length;
    vocab.max_piece_length = std::max(vocab.max_piece_length, static_cast<int>(length));
    vocab.kinds.push_back(KindOf(id, piece));
    vocab.scores.push_back(score);
    vocab.pieces.push_back(std::move(piece));
  }
  // run.c reads only vocab_size records and ignores the rest; so do we, but a tokenizer
  // with more tokens than the model is more likely a mismatch than intended, so say so.
  if (offset != size) {
    spdlog::warn("{}: {} bytes after the {} tokens the model uses are ignored", name, size - offset,
                 vocab_size);
  }
  return vocab;
}

absl::StatusOr<Vocabulary> LoadLlama2cTokenizer(const std::string& path, int vocab_size) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return ParseLlama2cTokenizer(path, (*file)->data(), (*file)->size(), vocab_size);
}

}  // namespace shardrun
