// libFuzzer target: encodes arbitrary bytes with tok512.bin's vocabulary in both styles
// (run.c's and llama.cpp's) and decodes the ids again. Besides crashes and sanitizer reports
// it checks what must hold for any input: every id is in range, and decoding after BOS gives
// the text back (exactly for run.c's style; for llama.cpp's up to "▁" versus space, since a
// "▁" in the text reads as a space and a bad lead byte can swallow part of a space's "▁").
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_replace.h"
#include "model/llama2c_tokenizer_file.h"
#include "model/tokenizer.h"

namespace shardrun {
namespace {

constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581 "▁"

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "tokenizer_fuzzer: %s\n", what);
  std::abort();
}

Tokenizer MakeOrDie(Vocabulary vocab) {
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::Create(std::move(vocab));
  if (!tokenizer.ok()) Fail(std::string(tokenizer.status().message()).c_str());
  return *std::move(tokenizer);
}

struct Tokenizers {
  Tokenizer llama2c;
  Tokenizer spm;
};

const Tokenizers& Get() {
  static const Tokenizers* tokenizers = [] {
    absl::StatusOr<Vocabulary> vocab =
        LoadLlama2cTokenizer(std::string(SHARDRUN_SHARED_DIR) + "/models/tok512.bin", 512);
    if (!vocab.ok()) Fail(std::string(vocab.status().message()).c_str());
    // The same vocabulary as stories260K.gguf holds it.
    Vocabulary spm = *vocab;
    spm.style = VocabularyStyle::kSentencePiece;
    for (std::string& piece : spm.pieces) piece = absl::StrReplaceAll(piece, {{" ", kSpaceMarker}});
    spm.pieces[spm.bos_id] = "<s>";
    spm.pieces[spm.eos_id] = "</s>";
    return new Tokenizers{MakeOrDie(*std::move(vocab)), MakeOrDie(std::move(spm))};
  }();
  return *tokenizers;
}

std::string Decode(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 1; i < ids.size(); ++i) text += tokenizer.DecodePiece(ids[i - 1], ids[i]);
  return text;
}

void CheckIds(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= tokenizer.size()) Fail("id out of range");
  }
}

std::string SpacesForMarkers(const std::string& text) {
  return absl::StrReplaceAll(text, {{kSpaceMarker, " "}});
}

}  // namespace
}  // namespace shardrun

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shardrun;
  const Tokenizers& t = Get();
  const std::string text(reinterpret_cast<const char*>(data), size);

  const std::vector<int32_t> llama2c = t.llama2c.Encode(text, true, false);
  CheckIds(t.llama2c, llama2c);
  if (Decode(t.llama2c, llama2c) != text) Fail("run.c style does not round-trip");

  const std::vector<int32_t> spm = t.spm.Encode(text, true, false);
  CheckIds(t.spm, spm);
  if (SpacesForMarkers(Decode(t.spm, spm)) != SpacesForMarkers(text)) {
    Fail("llama.cpp style does not round-trip");
  }

  // The other flag combinations, and decoding after arbitrary previous tokens.
  for (const Tokenizer* tokenizer : {&t.llama2c, &t.spm}) {
    const std::vector<int32_t> ids = tokenizer->Encode(text, false, true);
    CheckIds(*tokenizer, ids);
    if (ids.empty() || ids.back() != tokenizer->eos_id()) Fail("EOS missing");
    for (size_t i = 0; i + 1 < size; i += 2) {
      const int32_t prev = static_cast<int8_t>(data[i]) * 5;
      const int32_t token = static_cast<int32_t>(data[i + 1]) * 3 - 100;
      const std::string piece = tokenizer->DecodePiece(prev, token);
      if ((token < 0 || token >= tokenizer->size()) && !piece.empty()) {
        Fail("out-of-range id decodes to something");
      }
    }
  }
  return 0;
}
