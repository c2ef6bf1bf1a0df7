// Opening what a command runs: the model file (or the built-in default), its tokenizer.
#ifndef SHARDRUN_CLI_MODEL_SETUP_H_
#define SHARDRUN_CLI_MODEL_SETUP_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "model/model_file.h"
#include "model/tokenizer.h"

namespace shardrun {

// `path`, or when it is empty the built-in default model: a small synthetic model
// (`shardrun synth --preset tiny`) written once to the user's cache directory.
absl::StatusOr<std::string> ResolveModelPath(const std::string& path);

// The tokenizer for `model`: `tokenizer_path` (llama2.c tokenizer.bin) if given, else the
// vocabulary inside the model file, else tokenizer.bin beside a llama2.c checkpoint.
// nullopt when none can be found (the caller decides whether it needs one).
absl::StatusOr<std::optional<Tokenizer>> LoadTokenizerFor(const ModelFile& model,
                                                          const std::string& tokenizer_path);

}  // namespace shardrun

#endif  // SHARDRUN_CLI_MODEL_SETUP_H_
