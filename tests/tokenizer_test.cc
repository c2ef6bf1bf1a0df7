// The tokenizer against run.c's and llama.cpp's recorded outputs, against plain quadratic
// re-statements of both algorithms on random text, and on the edge cases where the two
// reference programs behave peculiarly.
#include "model/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "model/llama2c_tokenizer_file.h"
#include "model/model_file.h"
#include "tests/test_util.h"

namespace shardrun {
namespace {

using ::shardrun::testing::IdsAfter;
using ::shardrun::testing::ReadFile;
using ::shardrun::testing::ReadKeyValues;
using ::shardrun::testing::SharedPath;

const std::string kTok512 = SharedPath("models/tok512.bin");
constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581 "▁"

Vocabulary Tok512() {
  absl::StatusOr<Vocabulary> vocab = LoadLlama2cTokenizer(kTok512, 512);
  EXPECT_TRUE(vocab.ok()) << vocab.status();
  return vocab.ok() ? *std::move(vocab) : Vocabulary{};
}

// tok512.bin as llama.cpp's GGUF holds it: "▁" for spaces, BOS/EOS without llama2.c's
// newlines (checked against stories260K.gguf below).
Vocabulary Tok512AsSentencePiece() {
  Vocabulary vocab = Tok512();
  vocab.style = VocabularyStyle::kSentencePiece;
  for (std::string& piece : vocab.pieces) piece = absl::StrReplaceAll(piece, {{" ", kSpaceMarker}});
  vocab.pieces[1] = "<s>";
  vocab.pieces[2] = "</s>";
  return vocab;
}

Tokenizer Make(Vocabulary vocab) {
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::Create(std::move(vocab));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

// Both vocabularies are loaded once: tests only read them.
const Tokenizer& Llama2c() {
  static const Tokenizer* tokenizer = new Tokenizer(Make(Tok512()));
  return *tokenizer;
}
const Tokenizer& Spm() {
  static const Tokenizer* tokenizer = new Tokenizer(Make(Tok512AsSentencePiece()));
  return *tokenizer;
}

std::string DecodeAll(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 1; i < ids.size(); ++i) text += tokenizer.DecodePiece(ids[i - 1], ids[i]);
  return text;
}

// A tiny vocabulary for the edge cases; ids 0..2 are <unk>, BOS, EOS as in llama2.c.
Vocabulary TinyVocabulary(VocabularyStyle style,
                          const std::vector<std::pair<std::string, float>>& extra) {
  Vocabulary vocab;
  vocab.style = style;
  vocab.add_space_prefix = false;
  for (const auto& [piece, score] : std::vector<std::pair<std::string, float>>{
           {"<unk>", 0.0f}, {"\n<s>\n", 0.0f}, {"\n</s>\n", 0.0f}}) {
    vocab.pieces.push_back(piece);
    vocab.scores.push_back(score);
  }
  vocab.kinds = {TokenKind::kUnknown, TokenKind::kControl, TokenKind::kControl};
  for (const auto& [piece, score] : extra) {
    vocab.pieces.push_back(piece);
    vocab.scores.push_back(score);
    vocab.kinds.push_back(TokenKind::kNormal);
  }
  return vocab;
}

// ---------------------------------------------------------------------------------------
// Quadratic re-statements of the two reference encoders, written from their descriptions:
// rescan every adjacent pair after each merge, take the best score, leftmost on ties.

int32_t LinearFind(const Vocabulary& vocab, std::string_view piece, bool last) {
  int32_t found = -1;
  for (int32_t id = 0; id < vocab.size(); ++id) {
    if (vocab.pieces[id] == piece) {
      found = id;
      if (!last) break;
    }
  }
  return found;
}

// run.c's encode(): merges on the pieces' text, BOS included, scores must beat -1e10.
std::vector<int32_t> RunCEncode(const Vocabulary& vocab, std::string_view text, bool bos,
                                bool eos) {
  std::vector<int32_t> tokens;
  if (bos) tokens.push_back(1);
  if (!text.empty()) tokens.push_back(LinearFind(vocab, " ", false));
  for (size_t i = 0; i < text.size();) {
    size_t n = 1;
    while (n < 4 && i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80)
      ++n;
    const int32_t id = LinearFind(vocab, text.substr(i, n), false);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      for (size_t j = i; j < i + n; ++j) tokens.push_back(static_cast<unsigned char>(text[j]) + 3);
    }
    i += n;
  }
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_index = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      const int32_t id =
          LinearFind(vocab, vocab.pieces[tokens[i]] + vocab.pieces[tokens[i + 1]], false);
      if (id != -1 && vocab.scores[id] > best_score) {
        best_score = vocab.scores[id];
        best_id = id;
        best_index = i;
      }
    }
    if (best_id == -1) break;
    tokens[best_index] = best_id;
    tokens.erase(tokens.begin() + best_index + 1);
  }
  if (eos) tokens.push_back(2);
  return tokens;
}

// llama.cpp's SPM tokenizer: merges on the escaped text, characters delimited by lead byte,
// unresolved symbols spelled as <0xNN> tokens at the end.
std::vector<int32_t> LlamaCppEncode(const Vocabulary& vocab, std::string_view text, bool bos) {
  std::vector<int32_t> out;
  if (bos) out.push_back(1);
  if (text.empty()) return out;
  std::string escaped =
      absl::StrReplaceAll(std::string(kSpaceMarker) + std::string(text), {{" ", kSpaceMarker}});
  std::vector<std::string> symbols;
  for (size_t i = 0; i < escaped.size();) {
    const unsigned char lead = escaped[i];
    const size_t n = std::min<size_t>(lead < 0xC0   ? 1
                                      : lead < 0xE0 ? 2
                                      : lead < 0xF0 ? 3
                                                    : 4,
                                      escaped.size() - i);
    symbols.push_back(escaped.substr(i, n));
    i += n;
  }
  while (true) {
    float best_score = 0;
    int best_index = -1;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const int32_t id = LinearFind(vocab, symbols[i] + symbols[i + 1], true);
      if (id != -1 && (best_index < 0 || vocab.scores[id] > best_score)) {
        best_score = vocab.scores[id];
        best_index = static_cast<int>(i);
      }
    }
    if (best_index < 0) break;
    symbols[best_index] += symbols[best_index + 1];
    symbols.erase(symbols.begin() + best_index + 1);
  }
  for (const std::string& symbol : symbols) {
    const int32_t id = LinearFind(vocab, symbol, true);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (unsigned char byte : symbol) {
      char piece[8];
      std::snprintf(piece, sizeof(piece), "<0x%02X>", byte);
      out.push_back(LinearFind(vocab, piece, true));
    }
  }
  return out;
}

// Random text from fragments that merge a lot, UTF-8 of 2, 3 and 4 bytes, and (a quarter of
// the fragments) stray continuation bytes, truncated sequences, bare lead bytes and NULs.
std::string RandomText(std::mt19937& rng) {
  // clang-format off
  static const std::vector<std::string> kValid = {
      "a", "b", "e", "h", "t", "o", "n", " ", "  ", "\n", "\t", ".", ",", "<", "<0x41>",
      "Once", " upon", "the", " time", "naïve", "é", "ü", "日", "本", "🙂", "\xE2\x80\x94",
      "\xE2\x84\xA2"};
  static const std::vector<std::string> kInvalid = {
      "\xC3", "\xA9", "\x80\x80\x80\x80\x80", "\xE2\x82", "\xF0\x9F", "\xFF", "\xFE",
      std::string("\0", 1), "\xC3(", "\xED\xA0\x80", "\xF8\x88\x80\x80\x80"};
  // clang-format on
  std::uniform_int_distribution<int> count(0, 24);
  std::string text;
  for (int n = count(rng); n > 0; --n) {
    const bool bad = std::uniform_int_distribution<int>(0, 3)(rng) == 0;
    const auto& fragments = bad ? kInvalid : kValid;
    text += fragments[std::uniform_int_distribution<size_t>(0, fragments.size() - 1)(rng)];
  }
  return text;
}

// ---------------------------------------------------------------------------------------
// Reference outputs.

std::vector<std::filesystem::path> ReferenceCases() {
  std::vector<std::filesystem::path> cases;
  for (const char* dir : {"reference/runc", "reference/runq"}) {
    for (const auto& entry : std::filesystem::directory_iterator(SharedPath(dir))) {
      if (entry.path().extension() == ".args") cases.push_back(entry.path());
    }
  }
  std::sort(cases.begin(), cases.end());
  EXPECT_GE(cases.size(), 9u);
  return cases;
}

std::string Sibling(const std::filesystem::path& args, const char* extension) {
  std::filesystem::path path = args;
  return ReadFile(path.replace_extension(extension).string());
}

TEST(TokenizerTest, BothStylesEncodeEveryRunCPromptAsRunCDid) {
  for (const auto& args : ReferenceCases()) {
    const std::string prompt = ReadKeyValues(args.string())["prompt"];
    const std::vector<int32_t> expected = IdsAfter(Sibling(args, ".ids"), "prompt_ids");
    EXPECT_EQ(Llama2c().Encode(prompt, true, false), expected) << args;
    EXPECT_EQ(Spm().Encode(prompt, true, false), expected) << args;
  }
}

TEST(TokenizerTest, UnicodePromptUsesByteFallback) {
  const std::string prompt =
      "The caf\xC3\xA9 was \xC3\xBC"
      "ber nice \xE2\x80\x94 really";
  const std::vector<int32_t> ids = Llama2c().Encode(prompt, true, false);
  // "ü" is no piece of tok512: its two bytes come out as <0xC3> <0xBC> (byte + 3).
  const std::vector<int32_t> u_umlaut = {0xC3 + 3, 0xBC + 3};
  EXPECT_NE(std::search(ids.begin(), ids.end(), u_umlaut.begin(), u_umlaut.end()), ids.end());
  EXPECT_EQ(DecodeAll(Llama2c(), ids), prompt);
  EXPECT_EQ(DecodeAll(Spm(), ids), prompt);
}

// run.c's printer: decode(prev, next) for every position, through safe_printf (which drops a
// piece that is one unprintable byte), then a newline.
std::string RunCOutput(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::string text;
  for (size_t i = 1; i < ids.size(); ++i) {
    if (ids[i] == 1) break;  // run.c stops on BOS without printing it
    const std::string piece = tokenizer.DecodePiece(ids[i - 1], ids[i]);
    const unsigned char byte = piece.empty() ? 0 : piece[0];
    if (piece.size() == 1 && !(std::isprint(byte) || std::isspace(byte))) continue;
    text += piece;
  }
  return text + "\n";
}

TEST(TokenizerTest, DecodeReproducesRunCText) {
  for (const auto& args : ReferenceCases()) {
    const std::string ids_file = Sibling(args, ".ids");
    std::vector<int32_t> ids = IdsAfter(ids_file, "prompt_ids");
    const std::vector<int32_t> generated = IdsAfter(ids_file, "generated_ids");
    ids.insert(ids.end(), generated.begin(), generated.end());
    EXPECT_EQ(RunCOutput(Llama2c(), ids), Sibling(args, ".txt")) << args;
  }
}

TEST(TokenizerTest, DecodeGivesCorrectUtf8WhereRunCDroppedBytes) {
  const std::vector<int32_t> ids =
      IdsAfter(ReadFile(SharedPath("reference/runc/greedy-unicode.ids")), "prompt_ids");
  EXPECT_EQ(DecodeAll(Llama2c(), ids),
            "The caf\xC3\xA9 was \xC3\xBC"
            "ber nice \xE2\x80\x94 really");
}

TEST(TokenizerTest, SentencePieceMatchesLlamaCppOnTok512) {
  const std::vector<int32_t> expected =
      IdsAfter(ReadFile(SharedPath("reference/llamacpp/stories260K-once.ids")), "prompt_ids");
  EXPECT_EQ(Spm().Encode("Once upon a time", true, false), expected);
}

TEST(TokenizerTest, GgufVocabularyMatchesLlamaCpp) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model =
      ModelFile::Open(SharedPath("models/stories260K.gguf"));
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE((*model)->vocabulary().has_value());
  const Vocabulary& gguf = *(*model)->vocabulary();
  EXPECT_EQ(gguf.style, VocabularyStyle::kSentencePiece);
  // The converted tok512.bin the other tests use is exactly what the GGUF holds.
  const Vocabulary converted = Tok512AsSentencePiece();
  EXPECT_EQ(gguf.pieces, converted.pieces);
  EXPECT_EQ(gguf.scores, converted.scores);
  EXPECT_EQ(gguf.kinds, converted.kinds);
  EXPECT_EQ(gguf.bos_id, 1);
  EXPECT_EQ(gguf.eos_id, 2);
  EXPECT_EQ(gguf.unk_id, 0);
  EXPECT_TRUE(gguf.add_bos);  // llama.cpp's defaults for a llama vocabulary without the keys
  EXPECT_TRUE(gguf.add_space_prefix);

  const Tokenizer tokenizer = Make(gguf);
  const std::string ids_file = ReadFile(SharedPath("reference/llamacpp/stories260K-once.ids"));
  const std::vector<int32_t> prompt = IdsAfter(ids_file, "prompt_ids");
  EXPECT_EQ(tokenizer.Encode("Once upon a time", true, false), prompt);
  // llama.cpp's run equals run.c's over its whole length, so the text must too.
  std::vector<int32_t> ids = prompt;
  const std::vector<int32_t> generated = IdsAfter(ids_file, "generated_ids");
  ids.insert(ids.end(), generated.begin(), generated.end());
  EXPECT_EQ(DecodeAll(tokenizer, ids), DecodeAll(Llama2c(), ids));
}

// ---------------------------------------------------------------------------------------
// The two styles and the re-statements.

TEST(TokenizerTest, StylesAgreeOnValidText) {
  // On valid UTF-8 without "▁" the two algorithms differ only in ways tok512 cannot show:
  // run.c merges on pieces' text (a byte token reads "<0xNN>") and lets BOS merge, llama.cpp
  // merges raw text; tok512 has no piece that tells these apart.
  for (const std::string text :
       {"Once upon a time", "naïve café über 日本語 🙂", " leading", "trailing ", "   ",
        "multiple   spaces  here", "line one\nline two\n\n", "\n", "tab\there", "a",
        "Lily and Tom went to the park. They saw a big dog!", "€100 ™ — “quotes”", "日本語日本語",
        "🙂🙂 🙂", "x\xE2\x80\x8Ay"}) {
    for (bool bos : {false, true}) {
      for (bool eos : {false, true}) {
        EXPECT_EQ(Llama2c().Encode(text, bos, eos), Spm().Encode(text, bos, eos)) << text;
      }
    }
    const std::vector<int32_t> ids = Llama2c().Encode(text, true, false);
    EXPECT_EQ(DecodeAll(Llama2c(), ids), text);
    EXPECT_EQ(DecodeAll(Spm(), ids), text);
  }
}

TEST(TokenizerTest, StylesDifferOnInvalidUtf8AsTheirReferencesDo) {
  const int32_t space = Llama2c().Find(" ");
  const int32_t e_acute = Llama2c().Find("\xC3\xA9");
  const int32_t paren = Llama2c().Find("(");
  ASSERT_GE(space, 0);
  ASSERT_GE(e_acute, 0);
  ASSERT_GE(paren, 0);
  auto byte = [](int b) { return b + 3; };
  // A lead byte followed by a non-continuation byte: run.c ends the code point at "\xC3";
  // llama.cpp takes the length the lead byte announces and swallows "(" into the symbol,
  // which then is no piece and comes out as two byte tokens.
  EXPECT_EQ(Llama2c().Encode("\xC3(", false, false),
            (std::vector<int32_t>{space, byte(0xC3), paren}));
  EXPECT_EQ(Spm().Encode("\xC3(", false, false),
            (std::vector<int32_t>{space, byte(0xC3), byte('(')}));
  // Too many continuation bytes: run.c groups up to four bytes ("é" plus two strays), which
  // is no piece; llama.cpp reads "é" and then each stray on its own.
  EXPECT_EQ(
      Llama2c().Encode("\xC3\xA9\xA9\xA9\xA9", false, false),
      (std::vector<int32_t>{space, byte(0xC3), byte(0xA9), byte(0xA9), byte(0xA9), byte(0xA9)}));
  EXPECT_EQ(Spm().Encode("\xC3\xA9\xA9\xA9\xA9", false, false),
            (std::vector<int32_t>{space, e_acute, byte(0xA9), byte(0xA9), byte(0xA9)}));
  // "▁" in the text is a space to llama.cpp but an unknown character to run.c.
  EXPECT_EQ(Spm().Encode("\xE2\x96\x81", false, false), Spm().Encode(" ", false, false));
  EXPECT_EQ(Llama2c().Encode("\xE2\x96\x81", false, false),
            (std::vector<int32_t>{space, byte(0xE2), byte(0x96), byte(0x81)}));
}

TEST(TokenizerTest, MatchesRunCRestatementOnRandomText) {
  const Vocabulary vocab = Tok512();
  std::mt19937 rng(12345);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = RandomText(rng);
    const bool bos = i % 2 == 0;
    const bool eos = i % 3 == 0;
    ASSERT_EQ(Llama2c().Encode(text, bos, eos), RunCEncode(vocab, text, bos, eos)) << text;
  }
}

TEST(TokenizerTest, MatchesLlamaCppRestatementOnRandomText) {
  const Vocabulary vocab = Tok512AsSentencePiece();
  std::mt19937 rng(678);
  for (int i = 0; i < 2000; ++i) {
    const std::string text = RandomText(rng);
    ASSERT_EQ(Spm().Encode(text, true, false), LlamaCppEncode(vocab, text, true)) << text;
  }
}

// Whether every lead byte is followed by the continuation bytes it announces, i.e. whether
// llama.cpp's characters are real ones (overlong forms and surrogates do not matter here).
bool IsStructurallyValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = text[i];
    const size_t n = lead < 0x80 ? 1 : lead < 0xC0 ? 0 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    if (n == 0 || i + n > text.size()) return false;
    for (size_t j = i + 1; j < i + n; ++j) {
      if ((static_cast<unsigned char>(text[j]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

std::string SpacesForMarkers(const std::string& text) {
  return absl::StrReplaceAll(text, {{kSpaceMarker, " "}});
}

// Decoding after BOS gives the text back. run.c: always, as every byte is inside a piece or
// a byte token. llama.cpp: only if the text is valid UTF-8 without "▁"; otherwise a "▁" in
// the text comes back as a space, and a bad lead byte just before a space swallows part of
// its "▁", which then comes back as the marker's bytes (llama.cpp does the same).
void ExpectRoundTrip(const std::string& text) {
  const std::string llama2c = DecodeAll(Llama2c(), Llama2c().Encode(text, true, false));
  ASSERT_TRUE(llama2c == text) << "run.c style: " << text.substr(0, 200);
  const std::string spm = DecodeAll(Spm(), Spm().Encode(text, true, false));
  if (IsStructurallyValidUtf8(text) && text.find(kSpaceMarker) == std::string::npos) {
    ASSERT_TRUE(spm == text) << "llama.cpp style: " << text.substr(0, 200);
  } else {
    ASSERT_TRUE(SpacesForMarkers(spm) == SpacesForMarkers(text))
        << "llama.cpp style: " << text.substr(0, 200);
  }
}

TEST(TokenizerTest, RandomTextRoundTrips) {
  std::mt19937 rng(4242);
  for (int i = 0; i < 2000; ++i) ExpectRoundTrip(RandomText(rng));
}

TEST(TokenizerTest, SentencePieceLetsABadLeadByteSwallowASpace) {
  // "\xE2" announces three bytes, so llama.cpp's character takes "\xE2" plus the first two
  // bytes of the next space's "▁"; none of it is a piece, and all of it comes out as bytes.
  const std::vector<int32_t> ids = Spm().Encode("\xE2 x", true, false);
  ASSERT_GE(Spm().Find("x"), 0);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, Spm().Find(kSpaceMarker), 0xE2 + 3, 0xE2 + 3, 0x96 + 3,
                                       0x81 + 3, Spm().Find("x")}));
  EXPECT_EQ(DecodeAll(Spm(), ids), "\xE2\xE2\x96\x81x");
}

// ---------------------------------------------------------------------------------------
// Edge cases.

TEST(TokenizerTest, EmptyText) {
  for (const Tokenizer* tokenizer : {&Llama2c(), &Spm()}) {
    EXPECT_EQ(tokenizer->Encode("", true, false), std::vector<int32_t>{1});
    EXPECT_EQ(tokenizer->Encode("", false, false), std::vector<int32_t>{});
    EXPECT_EQ(tokenizer->Encode("", true, true), (std::vector<int32_t>{1, 2}));
    EXPECT_EQ(tokenizer->Encode("", false, true), std::vector<int32_t>{2});
  }
}

TEST(TokenizerTest, NulIsAnOrdinaryByte) {
  const std::string text("a\0b", 3);
  const std::vector<int32_t> expected = {1, Llama2c().Find(" a"), 3, Llama2c().Find("b")};
  EXPECT_EQ(Llama2c().Encode(text, true, false), expected);
  EXPECT_EQ(Spm().Encode(text, true, false), expected);
  EXPECT_EQ(DecodeAll(Llama2c(), expected), text);
}

TEST(TokenizerTest, TiesMergeLeftmost) {
  for (VocabularyStyle style : {VocabularyStyle::kLlama2c, VocabularyStyle::kSentencePiece}) {
    const Tokenizer tokenizer = Make(TinyVocabulary(style, {{"a", 0}, {"aa", 1}}));
    EXPECT_EQ(tokenizer.Encode("aaa", false, false), (std::vector<int32_t>{4, 3}));
    EXPECT_EQ(tokenizer.Encode("aaaa", false, false), (std::vector<int32_t>{4, 4}));
  }
}

TEST(TokenizerTest, HigherScoreMergesFirst) {
  for (VocabularyStyle style : {VocabularyStyle::kLlama2c, VocabularyStyle::kSentencePiece}) {
    // "bc" outscores "ab", so "abc" becomes a + bc, not ab + c.
    const Tokenizer tokenizer =
        Make(TinyVocabulary(style, {{"a", 0}, {"b", 0}, {"c", 0}, {"ab", 1}, {"bc", 2}}));
    EXPECT_EQ(tokenizer.Encode("abc", false, false), (std::vector<int32_t>{3, 7}));
  }
}

TEST(TokenizerTest, RunCNeverMergesIntoScoresAtOrBelowMinusTenBillion) {
  const std::vector<std::pair<std::string, float>> pieces = {{"a", 0}, {"b", 0}, {"ab", -1e10f}};
  EXPECT_EQ(Make(TinyVocabulary(VocabularyStyle::kLlama2c, pieces)).Encode("ab", false, false),
            (std::vector<int32_t>{3, 4}));
  // llama.cpp has no such floor.
  EXPECT_EQ(
      Make(TinyVocabulary(VocabularyStyle::kSentencePiece, pieces)).Encode("ab", false, false),
      std::vector<int32_t>{5});
}

TEST(TokenizerTest, RunCLetsBosMerge) {
  // run.c puts BOS in the token list before merging, so a piece "\n<s>\n" + "x" would absorb
  // it; llama.cpp adds BOS outside the merge.
  const std::vector<std::pair<std::string, float>> pieces = {{"x", 0}, {"\n<s>\nx", 5}};
  EXPECT_EQ(Make(TinyVocabulary(VocabularyStyle::kLlama2c, pieces)).Encode("x", true, false),
            std::vector<int32_t>{4});
  EXPECT_EQ(Make(TinyVocabulary(VocabularyStyle::kSentencePiece, pieces)).Encode("x", true, false),
            (std::vector<int32_t>{1, 3}));
}

TEST(TokenizerTest, MissingByteTokensFallBackToUnknown) {
  // A vocabulary too small for run.c's byte + 3 and without <0xNN> pieces.
  for (VocabularyStyle style : {VocabularyStyle::kLlama2c, VocabularyStyle::kSentencePiece}) {
    const Tokenizer tokenizer = Make(TinyVocabulary(style, {{"a", 0}}));
    EXPECT_EQ(tokenizer.Encode("a\xFFz", false, false), (std::vector<int32_t>{3, 0, 0}));
  }
}

TEST(TokenizerTest, SentencePieceRespectsVocabularyFlags) {
  Vocabulary vocab = Tok512AsSentencePiece();
  vocab.add_bos = false;
  vocab.add_space_prefix = false;
  const Tokenizer tokenizer = Make(vocab);
  const std::vector<int32_t> ids = tokenizer.Encode("Once", true, false);
  // No BOS although asked, and no "▁" in front: the pieces spell exactly "Once".
  std::string spelled;
  for (int32_t id : ids) spelled += vocab.pieces[id];
  EXPECT_EQ(spelled, "Once");
  // With no prefix added, none is dropped when decoding after BOS.
  EXPECT_EQ(tokenizer.DecodePiece(1, tokenizer.Find(std::string(kSpaceMarker) + "Once")), " Once");
}

TEST(TokenizerTest, DecodePiece) {
  const Tokenizer& l = Llama2c();
  const int32_t once = l.Find(" Once");
  EXPECT_EQ(l.DecodePiece(1, once), "Once");
  EXPECT_EQ(l.DecodePiece(5, once), " Once");
  EXPECT_EQ(l.DecodePiece(1, 13), "\n");  // <0x0A>
  EXPECT_EQ(l.DecodePiece(7, 0xC3 + 3), "\xC3");
  EXPECT_EQ(l.DecodePiece(7, 2), "\n</s>\n");  // run.c prints control pieces as they are
  EXPECT_EQ(l.DecodePiece(7, 0), "<unk>");
  EXPECT_EQ(l.DecodePiece(7, -1), "");
  EXPECT_EQ(l.DecodePiece(7, 512), "");
  const Tokenizer& s = Spm();
  EXPECT_EQ(s.DecodePiece(1, once), "Once");
  EXPECT_EQ(s.DecodePiece(5, once), " Once");
  EXPECT_EQ(s.DecodePiece(1, 13), "\n");
  EXPECT_EQ(s.DecodePiece(7, 2), "");
  EXPECT_EQ(s.DecodePiece(7, 0), "");
  EXPECT_EQ(s.DecodePiece(-3, 512), "");
}

TEST(TokenizerTest, RunCDecodeReadsBytePiecesLikeSscanf) {
  // run.c's sscanf("<0x%02hhX>") accepts one hex digit and never checks the closing '>'.
  Vocabulary vocab = TinyVocabulary(VocabularyStyle::kLlama2c,
                                    {{"<0x4", 0}, {"<0x41zz", 0}, {"<0x>", 0}, {" <0x41>", 0}});
  const Tokenizer tokenizer = Make(std::move(vocab));
  EXPECT_EQ(tokenizer.DecodePiece(0, 3), "\x04");
  EXPECT_EQ(tokenizer.DecodePiece(0, 4), "A");
  EXPECT_EQ(tokenizer.DecodePiece(0, 5), "<0x>");
  EXPECT_EQ(tokenizer.DecodePiece(0, 6), " <0x41>");
  EXPECT_EQ(tokenizer.DecodePiece(1, 6), "A");  // after BOS the space goes first
}

// A quarter megabyte of text: run.c's rescan after every merge would take minutes here.
TEST(TokenizerTest, LongTextIsNotQuadratic) {
  constexpr size_t kSize = 1 << 18;
  std::string text;
  while (text.size() < kSize) text += "Lily and Tom went to the park. They saw a big dog! ";
  for (const Tokenizer* tokenizer : {&Llama2c(), &Spm()}) {
    const std::vector<int32_t> ids = tokenizer->Encode(text, true, false);
    EXPECT_LT(ids.size(), text.size() / 2);
  }
  ExpectRoundTrip(text);
  // Degenerate inputs: one long run of a mergeable character, and random bytes.
  ExpectRoundTrip(std::string(kSize, 'a'));
  std::string junk(kSize, '\0');
  std::mt19937 rng(9);
  for (char& c : junk) c = static_cast<char>(rng());
  ExpectRoundTrip(junk);
}

// ---------------------------------------------------------------------------------------
// Construction and the tokenizer.bin reader.

TEST(TokenizerTest, CreateRejectsInconsistentVocabularies) {
  Vocabulary empty;
  EXPECT_FALSE(Tokenizer::Create(empty).ok());
  Vocabulary short_scores = Tok512();
  short_scores.scores.pop_back();
  EXPECT_FALSE(Tokenizer::Create(short_scores).ok());
  Vocabulary bad_bos = Tok512();
  bad_bos.bos_id = 512;
  EXPECT_FALSE(Tokenizer::Create(bad_bos).ok());
  Vocabulary bad_unk = Tok512();
  bad_unk.unk_id = -2;
  EXPECT_FALSE(Tokenizer::Create(bad_unk).ok());
}

TEST(Llama2cTokenizerFileTest, ReadsTok512) {
  const Vocabulary vocab = Tok512();
  ASSERT_EQ(vocab.size(), 512);
  EXPECT_EQ(vocab.style, VocabularyStyle::kLlama2c);
  EXPECT_EQ(vocab.pieces[0], "<unk>");
  EXPECT_EQ(vocab.pieces[1], "\n<s>\n");
  EXPECT_EQ(vocab.pieces[259], " t");
  EXPECT_EQ(vocab.scores[260], -1.0f);
  EXPECT_EQ(vocab.kinds[0], TokenKind::kUnknown);
  EXPECT_EQ(vocab.kinds[1], TokenKind::kControl);
  EXPECT_EQ(vocab.kinds[2], TokenKind::kControl);
  EXPECT_EQ(vocab.kinds[3], TokenKind::kByte);
  EXPECT_EQ(vocab.kinds[258], TokenKind::kByte);
  EXPECT_EQ(vocab.kinds[259], TokenKind::kNormal);
  EXPECT_EQ(vocab.max_piece_length, 7);
  EXPECT_EQ(vocab.bos_id, 1);
  EXPECT_EQ(vocab.eos_id, 2);
  EXPECT_EQ(vocab.unk_id, 0);
}

// tok512.bin with the 32-bit field at `offset` replaced.
std::string Patched(size_t offset, int32_t value) {
  std::string bytes = ReadFile(kTok512);
  std::memcpy(bytes.data() + offset, &value, 4);
  return bytes;
}

void ExpectError(const std::string& bytes, int vocab_size, const std::string& message) {
  const absl::StatusOr<Vocabulary> vocab = ParseLlama2cTokenizer(
      "tok.bin", reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), vocab_size);
  ASSERT_FALSE(vocab.ok());
  EXPECT_NE(vocab.status().message().find("tok.bin"), std::string::npos) << vocab.status();
  EXPECT_NE(vocab.status().message().find(message), std::string::npos) << vocab.status();
}

TEST(Llama2cTokenizerFileTest, RejectsBadFiles) {
  const std::string good = ReadFile(kTok512);
  // Token 0 is at byte 4: score, then length, then "<unk>".
  ExpectError(good.substr(0, good.size() - 1), 512, "truncated");
  ExpectError(good.substr(0, 2), 512, "truncated");
  ExpectError(good.substr(0, 28), 3, "truncated: token 1 needs");
  ExpectError(good, 100000, "cannot hold");
  ExpectError(good, 2, "too small");
  ExpectError(Patched(0, -1), 512, "max_token_length");
  ExpectError(Patched(0, 1 << 30), 512, "max_token_length");
  ExpectError(Patched(8, -5), 512, "negative length");
  ExpectError(Patched(8, 8), 512, "> max_token_length");
  ExpectError(Patched(8, 1 << 30), 512, "> max_token_length");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  int32_t nan_bits;
  std::memcpy(&nan_bits, &nan, 4);
  ExpectError(Patched(4, nan_bits), 512, "NaN");
  EXPECT_FALSE(LoadLlama2cTokenizer(SharedPath("models/no-such-tokenizer.bin"), 512).ok());
}

TEST(Llama2cTokenizerFileTest, IgnoresTokensBeyondTheModelsVocabulary) {
  // run.c reads only vocab_size records.
  const absl::StatusOr<Vocabulary> vocab = LoadLlama2cTokenizer(kTok512, 300);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->size(), 300);
  EXPECT_EQ(vocab->pieces[299], Tok512().pieces[299]);
}

}  // namespace
}  // namespace shardrun
