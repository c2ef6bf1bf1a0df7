// Text <-> token ids for a SentencePiece-style vocabulary, reproducing two reference programs
// exactly, chosen by Vocabulary::style:
//
// - kLlama2c: llama2.c run.c's encode() and decode(). Optional BOS; a dummy-prefix " " token
//   when the text is non-empty; the text split into "code points" the way run.c does it (any
//   byte plus up to three following continuation bytes, valid UTF-8 or not); each code point
//   looked up as a piece, else spelled as byte tokens (byte + 3); then, while some adjacent
//   pair of tokens concatenates to a piece, merge the pair whose piece has the highest score
//   (leftmost on ties; scores <= -1e10 never merge; BOS takes part like any token); optional
//   EOS.
// - kSentencePiece: llama.cpp's SPM tokenizer (llm_tokenizer_spm). Spaces become "▁"; a "▁"
//   is prepended when add_space_prefix; symbols are UTF-8 characters as llama.cpp delimits
//   them (length from the lead byte alone, so a bad lead byte swallows what follows, even
//   part of a "▁"); pairs merge by piece score, highest first, leftmost on ties; a symbol
//   left that is no piece becomes its bytes' <0xNN> tokens. Text that spells a control token
//   stays text (llama.cpp's parse_special = false). llama.cpp would still split out
//   user-defined tokens first; we do not, which matters only for vocabularies that have them
//   (stories260K's has none).
//
// Both encoders run in O(n log n): a linked list of symbols and a priority queue of candidate
// merges replace run.c's rescan of the whole sequence after every merge, with the same result
// (the queue orders candidates exactly as run.c's scan picks them).
//
// Input may be any bytes: invalid UTF-8 becomes byte tokens, and a NUL is an ordinary byte
// (run.c would stop at it, as its text is a C string; we keep the rest of the text).
#ifndef SHARDRUN_MODEL_TOKENIZER_H_
#define SHARDRUN_MODEL_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "model/vocabulary.h"

namespace shardrun {

class Tokenizer {
 public:
  // Checks that the vocabulary is consistent (as many scores and kinds as pieces, special ids
  // in range or -1 for absent) and builds the lookup tables.
  static absl::StatusOr<Tokenizer> Create(Vocabulary vocabulary);

  // The ids for `text`. add_bos: start with BOS (kSentencePiece: only if the vocabulary's
  // add_bos says so too, as llama.cpp does). add_eos: end with EOS.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos, bool add_eos) const;

  // The bytes to print for `token` when it follows `prev_token`: run.c's decode(). After BOS
  // a leading space is dropped; a byte token gives its raw byte; kSentencePiece turns "▁"
  // into " " and gives "" for control, unknown and unused tokens, where kLlama2c prints every
  // piece as it is (run.c prints "\n</s>\n" for EOS). Unlike run.c's safe_printf nothing is
  // filtered, so the bytes of a multi-byte character spelled as byte tokens join up into
  // valid UTF-8 across calls. Out-of-range ids give "".
  std::string DecodePiece(int32_t prev_token, int32_t token) const;

  const Vocabulary& vocabulary() const { return vocab_; }
  int32_t bos_id() const { return vocab_.bos_id; }
  int32_t eos_id() const { return vocab_.eos_id; }
  int32_t size() const { return vocab_.size(); }

  // The id of `piece`, or -1. Duplicate pieces resolve as in the reference program: the
  // first id for kLlama2c (run.c's lookup), the last for kSentencePiece (llama.cpp's map).
  int32_t Find(std::string_view piece) const;

 private:
  explicit Tokenizer(Vocabulary vocabulary) : vocab_(std::move(vocabulary)) {}
  void BuildTables();

  std::vector<int32_t> EncodeLlama2c(std::string_view text, bool add_bos, bool add_eos) const;
  std::vector<int32_t> EncodeSentencePiece(std::string_view text, bool add_bos, bool add_eos) const;

  Vocabulary vocab_;
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  // Score used to rank merges into each token; see BuildTables for the style differences.
  std::vector<float> merge_scores_;
  // The token for each byte value when a piece cannot be found (-1 if the vocabulary has none).
  std::array<int32_t, 256> byte_token_{};
  // DecodePiece's answers, computed once: after any token but BOS, and after BOS.
  std::vector<std::string> decoded_;
  std::vector<std::string> decoded_after_bos_;
  int32_t dummy_prefix_id_ = -1;  // kLlama2c: the piece " "
};

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_TOKENIZER_H_
