#include "model/tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <queue>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace shardrun {
namespace {

constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581 "▁"
// run.c starts its search for the best merge at this score and takes only greater ones, so a
// piece scored this low (or NaN) is never merged into.
constexpr float kLlama2cMinMergeScore = -1e10f;

// One element of the sequence being merged: a token (or, in kSentencePiece, a character that
// is no piece yet), linked to its neighbours so that a merge is O(1).
struct Symbol {
  int32_t id;        // token id; -1 for a kSentencePiece character that is no piece
  uint32_t version;  // bumped whenever the symbol changes, which voids its queued merges
  size_t begin;      // kSentencePiece: the symbol's bytes in the escaped text
  size_t length;
  int64_t prev;  // -1 at the ends
  int64_t next;
};

struct Candidate {
  float score;
  int64_t left;
  int64_t right;
  uint32_t left_version;
  uint32_t right_version;
  int32_t id;  // what the pair merges into
};

// The queue's top is the candidate run.c's scan would pick (and llama.cpp's comparator):
// highest score, then leftmost. Symbols keep their order, so index order is position order.
struct CandidateLess {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

// Links symbols[i] to its neighbours in index order.
void Link(std::vector<Symbol>& symbols) {
  const int64_t n = static_cast<int64_t>(symbols.size());
  for (int64_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
}

// Merges adjacent symbols until no pair may merge. `find_merge(left, right)` returns the
// token the pair would become, or -1 if it may not merge; `scores` ranks the tokens. A merged
// symbol keeps the left one's index, so index 0 stays the head of the list.
template <typename FindMerge>
void MergeAll(std::vector<Symbol>& symbols, const std::vector<float>& scores,
              const FindMerge& find_merge) {
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateLess> queue;
  auto consider = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    const int32_t id = find_merge(symbols[left], symbols[right]);
    if (id < 0) return;
    queue.push({scores[id], left, right, symbols[left].version, symbols[right].version, id});
  };
  for (size_t i = 1; i < symbols.size(); ++i) consider(i - 1, i);
  while (!queue.empty()) {
    const Candidate best = queue.top();
    queue.pop();
    Symbol& left = symbols[best.left];
    Symbol& right = symbols[best.right];
    if (left.version != best.left_version || right.version != best.right_version) continue;
    left.id = best.id;
    left.length += right.length;
    left.next = right.next;
    ++left.version;
    if (right.next >= 0) symbols[right.next].prev = best.left;
    ++right.version;  // unlinked: nothing may merge with it any more
    consider(left.prev, best.left);
    consider(best.left, left.next);
  }
}

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// llama.cpp's unicode_len_utf8: the length a lead byte announces, whatever follows it.
size_t Utf8Length(char lead) {
  static constexpr size_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[static_cast<unsigned char>(lead) >> 4];
}

// run.c's decode() for a piece: one that sscanf reads as "<0x%02hhX>" stands for that byte.
// sscanf itself is used because its leniency (no check of the closing '>', one hex digit
// enough) is part of what run.c prints.
std::string DecodeLlama2cPiece(const std::string& piece) {
  unsigned char byte = 0;
  if (std::sscanf(piece.c_str(), "<0x%02hhX>", &byte) == 1) {
    return std::string(1, static_cast<char>(byte));
  }
  return piece;
}

// llama.cpp's token_to_piece (special = false) for an SPM vocabulary, except that an unknown
// token gives "" rather than "▅".
std::string DecodeSentencePiece(const std::string& piece, TokenKind kind) {
  switch (kind) {
    case TokenKind::kNormal:
      return absl::StrReplaceAll(piece, {{kSpaceMarker, " "}});
    case TokenKind::kUserDefined:
      return piece;
    case TokenKind::kByte: {
      // llama.cpp's token_to_byte: strtol of the two characters after "<0x".
      if (piece.size() < 3) return "";
      const std::string hex = piece.substr(3, 2);
      return std::string(1, static_cast<char>(std::strtol(hex.c_str(), nullptr, 16)));
    }
    default:
      return "";
  }
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::Create(Vocabulary vocabulary) {
  const size_t n = vocabulary.pieces.size();
  if (n == 0) return absl::InvalidArgumentError("vocabulary is empty");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", n, " pieces, too many"));
  }
  if (vocabulary.scores.size() != n || vocabulary.kinds.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("vocabulary has ", n, " pieces but ",
                                                   vocabulary.scores.size(), " scores and ",
                                                   vocabulary.kinds.size(), " kinds"));
  }
  for (const auto& [name, id] : {std::pair<const char*, int>{"bos", vocabulary.bos_id},
                                 {"eos", vocabulary.eos_id},
                                 {"unk", vocabulary.unk_id}}) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary ", name, " id ", id, " is outside 0..", n - 1));
    }
  }
  Tokenizer tokenizer(std::move(vocabulary));
  tokenizer.BuildTables();
  return tokenizer;
}

void Tokenizer::BuildTables() {
  const int32_t n = vocab_.size();
  const bool llama2c = vocab_.style == VocabularyStyle::kLlama2c;
  piece_to_id_.reserve(n);
  merge_scores_.resize(n);
  decoded_.resize(n);
  decoded_after_bos_.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = vocab_.pieces[id];
    if (llama2c) {
      piece_to_id_.try_emplace(piece, id);
      // run.c compares raw scores; NaN and anything <= -1e10 simply never win.
      merge_scores_[id] = vocab_.scores[id];
      decoded_[id] = DecodeLlama2cPiece(piece);
      decoded_after_bos_[id] =
          !piece.empty() && piece[0] == ' ' ? DecodeLlama2cPiece(piece.substr(1)) : decoded_[id];
    } else {
      // llama.cpp renames empty pieces ("[EMPTY_id]"), so an empty piece never matches.
      if (!piece.empty()) piece_to_id_.insert_or_assign(piece, id);
      // NaN would break the queue's ordering; llama.cpp's result is undefined there anyway.
      const float score = vocab_.scores[id];
      merge_scores_[id] = std::isnan(score) ? -std::numeric_limits<float>::infinity() : score;
      decoded_[id] = DecodeSentencePiece(piece, vocab_.kinds[id]);
      // The space dropped after BOS is the one add_space_prefix put there.
      const bool text_piece =
          vocab_.kinds[id] == TokenKind::kNormal || vocab_.kinds[id] == TokenKind::kUserDefined;
      decoded_after_bos_[id] =
          vocab_.add_space_prefix && text_piece && !decoded_[id].empty() && decoded_[id][0] == ' '
              ? decoded_[id].substr(1)
              : decoded_[id];
    }
  }
  for (int byte = 0; byte < 256; ++byte) {
    int32_t id = -1;
    if (llama2c) {
      // run.c assumes the 256 byte tokens follow <unk>, <s>, </s>.
      if (byte + 3 < n) id = byte + 3;
    } else {
      // llama.cpp's byte_to_token: the <0xNN> piece, else the byte itself as a piece.
      id = Find(absl::StrFormat("<0x%02X>", byte));
      if (id < 0) id = Find(std::string(1, static_cast<char>(byte)));
    }
    // Where the reference would index past the vocabulary (run.c) or throw (llama.cpp) we
    // fall back to the unknown token; -1 (none) drops the byte.
    byte_token_[byte] = id >= 0 ? id : vocab_.unk_id;
  }
  dummy_prefix_id_ = llama2c ? Find(" ") : -1;
}

int32_t Tokenizer::Find(std::string_view piece) const {
  // Debian's abseil has its own string_view; the map's transparent lookup takes that one.
  const auto it = piece_to_id_.find(absl::string_view(piece.data(), piece.size()));
  return it == piece_to_id_.end() ? -1 : it->second;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos, bool add_eos) const {
  return vocab_.style == VocabularyStyle::kLlama2c ? EncodeLlama2c(text, add_bos, add_eos)
                                                   : EncodeSentencePiece(text, add_bos, add_eos);
}

std::vector<int32_t> Tokenizer::EncodeLlama2c(std::string_view text, bool add_bos,
                                              bool add_eos) const {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size() + 2);
  auto push = [&symbols](int32_t id) {
    if (id >= 0) symbols.push_back({id, 0, 0, 0, -1, -1});
  };
  // BOS goes in before merging, as in run.c, so it takes part in the pair search.
  if (add_bos) push(vocab_.bos_id);
  // run.c looks up " " and uses the result unchecked; without that piece we add nothing.
  if (!text.empty()) push(dummy_prefix_id_);
  for (size_t i = 0; i < text.size();) {
    size_t length = 1;
    while (length < 4 && i + length < text.size() && IsContinuationByte(text[i + length])) {
      ++length;
    }
    const int32_t id = Find(text.substr(i, length));
    if (id >= 0) {
      push(id);
    } else {
      for (size_t j = i; j < i + length; ++j) {
        push(byte_token_[static_cast<unsigned char>(text[j])]);
      }
    }
    i += length;
  }
  Link(symbols);

  // run.c merges on the pieces' text (a byte token contributes "<0xNN>"), not the input bytes.
  std::string pair;
  MergeAll(symbols, merge_scores_, [&](const Symbol& left, const Symbol& right) {
    pair.assign(vocab_.pieces[left.id]);
    pair.append(vocab_.pieces[right.id]);
    const int32_t id = Find(pair);
    return id >= 0 && merge_scores_[id] > kLlama2cMinMergeScore ? id : -1;
  });

  std::vector<int32_t> ids;
  ids.reserve(symbols.size() + 1);
  if (!symbols.empty()) {
    for (int64_t i = 0; i != -1; i = symbols[i].next) ids.push_back(symbols[i].id);
  }
  if (add_eos && vocab_.eos_id >= 0) ids.push_back(vocab_.eos_id);
  return ids;
}

std::vector<int32_t> Tokenizer::EncodeSentencePiece(std::string_view text, bool add_bos,
                                                    bool add_eos) const {
  std::vector<int32_t> ids;
  if (add_bos && vocab_.add_bos && vocab_.bos_id >= 0) ids.push_back(vocab_.bos_id);
  if (!text.empty()) {
    std::string escaped;
    escaped.reserve(text.size() + sizeof(kSpaceMarker));
    if (vocab_.add_space_prefix) escaped.append(kSpaceMarker);
    for (char c : text) {
      if (c == ' ') {
        escaped.append(kSpaceMarker);
      } else {
        escaped.push_back(c);
      }
    }

    std::vector<Symbol> symbols;
    symbols.reserve(escaped.size());
    for (size_t offset = 0; offset < escaped.size();) {
      const size_t length = std::min(Utf8Length(escaped[offset]), escaped.size() - offset);
      const int32_t id = Find(std::string_view(escaped).substr(offset, length));
      symbols.push_back({id, 0, offset, length, -1, -1});
      offset += length;
    }
    Link(symbols);
    MergeAll(symbols, merge_scores_, [&](const Symbol& left, const Symbol& right) {
      return Find(std::string_view(escaped).substr(left.begin, left.length + right.length));
    });

    // llama.cpp's resegment: a symbol that is no piece is spelled in byte tokens.
    for (int64_t i = 0; i != -1; i = symbols[i].next) {
      const Symbol& symbol = symbols[i];
      if (symbol.id >= 0) {
        ids.push_back(symbol.id);
        continue;
      }
      for (size_t j = symbol.begin; j < symbol.begin + symbol.length; ++j) {
        const int32_t id = byte_token_[static_cast<unsigned char>(escaped[j])];
        if (id >= 0) ids.push_back(id);
      }
    }
  }
  if (add_eos && vocab_.eos_id >= 0) ids.push_back(vocab_.eos_id);
  return ids;
}

std::string Tokenizer::DecodePiece(int32_t prev_token, int32_t token) const {
  if (token < 0 || token >= vocab_.size()) return "";
  const bool after_bos = vocab_.bos_id >= 0 && prev_token == vocab_.bos_id;
  return after_bos ? decoded_after_bos_[token] : decoded_[token];
}

}  // namespace shardrun
