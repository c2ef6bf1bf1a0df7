// A SentencePiece-style vocabulary: pieces with merge scores and kinds.
//
// Two sources fill it: llama2.c's tokenizer.bin (pieces use a plain space) and the GGUF
// `tokenizer.ggml.*` arrays (pieces use U+2581 "▁" for a space). `style` records which, since
// run.c and llama.cpp tokenize slightly differently and we reproduce each exactly.
#ifndef SHARDRUN_MODEL_VOCABULARY_H_
#define SHARDRUN_MODEL_VOCABULARY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace shardrun {

enum class TokenKind : int32_t {  // GGUF tokenizer.ggml.token_type values
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class VocabularyStyle {
  kLlama2c,        // tokenizer.bin: run.c's encoder and decoder
  kSentencePiece,  // GGUF llama vocabulary: llama.cpp's SPM encoder and decoder
};

struct Vocabulary {
  VocabularyStyle style = VocabularyStyle::kLlama2c;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<TokenKind> kinds;
  int bos_id = 1;
  int eos_id = 2;
  int unk_id = 0;
  bool add_bos = true;
  bool add_space_prefix = true;
  int max_piece_length = 0;

  int size() const { return static_cast<int>(pieces.size()); }
};

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_VOCABULARY_H_
