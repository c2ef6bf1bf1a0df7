#include "cli/model_setup.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "model/llama2c_tokenizer_file.h"
#include "model/synth_model.h"
#include "spdlog/spdlog.h"

namespace shardrun {

absl::StatusOr<std::string> ResolveModelPath(const std::string& path) {
  if (!path.empty()) return path;
  namespace fs = std::filesystem;
  fs::path dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0') {
    dir = fs::path(xdg) / "shardrun";
  } else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    dir = fs::path(home) / ".cache" / "shardrun";
  } else {
    dir = fs::temp_directory_path() / "shardrun";
  }
  const SynthSpec spec = DefaultModelSpec();
  // The name changes with anything that changes the file, so an old cache is never reused.
  const std::string file = absl::StrCat("builtin-", spec.name, "-", spec.dim, "x", spec.n_layers,
                                        "-", std::string(TensorTypeName(spec.weight_type)), "-seed",
                                        spec.seed, "-v", kSynthVersion, ".gguf");
  const fs::path model_path = dir / file;
  std::error_code ec;
  if (fs::exists(model_path, ec)) return model_path.string();
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  spdlog::info("no model given: writing the built-in default model (synthetic, seeded) to {}",
               model_path.string());
  if (absl::Status s = WriteSynthModel(spec, model_path.string()); !s.ok()) return s;
  return model_path.string();
}

absl::StatusOr<std::optional<Tokenizer>> LoadTokenizerFor(const ModelFile& model,
                                                          const std::string& tokenizer_path) {
  std::optional<Vocabulary> vocabulary;
  if (!tokenizer_path.empty()) {
    auto loaded = LoadLlama2cTokenizer(tokenizer_path, model.config().vocab_size);
    if (!loaded.ok()) return loaded.status();
    vocabulary = *std::move(loaded);
  } else if (model.vocabulary().has_value()) {
    vocabulary = *model.vocabulary();
  } else if (model.format() != ModelFormat::kGguf) {
    const auto beside = std::filesystem::path(model.path()).parent_path() / "tokenizer.bin";
    std::error_code ec;
    if (std::filesystem::exists(beside, ec)) {
      auto loaded = LoadLlama2cTokenizer(beside.string(), model.config().vocab_size);
      if (!loaded.ok()) return loaded.status();
      vocabulary = *std::move(loaded);
    }
  }
  if (!vocabulary.has_value()) return std::optional<Tokenizer>();
  if (vocabulary->size() != model.config().vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tokenizer has ", vocabulary->size(), " tokens; ", model.path(),
                     " has a vocabulary of ", model.config().vocab_size));
  }
  auto tokenizer = Tokenizer::Create(*std::move(vocabulary));
  if (!tokenizer.ok()) return tokenizer.status();
  return std::optional<Tokenizer>(*std::move(tokenizer));
}

}  // namespace shardrun
