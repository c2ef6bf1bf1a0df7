// Reads llama2.c's tokenizer.bin into a Vocabulary.
//
// The file is an int32 max_token_length followed by one record per token: a float32 merge
// score, an int32 byte length and that many bytes (the piece, with a plain space where
// SentencePiece has "▁"). The token count is not in the file: it is the model's vocab_size,
// which is why the caller passes it. Numbers are little-endian, as llama2.c writes them.
#ifndef SHARDRUN_MODEL_LLAMA2C_TOKENIZER_FILE_H_
#define SHARDRUN_MODEL_LLAMA2C_TOKENIZER_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/vocabulary.h"

namespace shardrun {

// Opens and parses `path`. The result has style kLlama2c, ids unk 0, bos 1, eos 2; kinds:
// token 0 unknown, 1 and 2 control, pieces of the form <0xNN> byte, the rest normal.
absl::StatusOr<Vocabulary> LoadLlama2cTokenizer(const std::string& path, int vocab_size);

// Parses a tokenizer.bin held in memory; `name` is used in error messages (tests, fuzzers).
absl::StatusOr<Vocabulary> ParseLlama2cTokenizer(std::string_view name, const uint8_t* data,
                                                 size_t size, int vocab_size);

}  // namespace shardrun

#endif  // SHARDRUN_MODEL_LLAMA2C_TOKENIZER_FILE_H_
