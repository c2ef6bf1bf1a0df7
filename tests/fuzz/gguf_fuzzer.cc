// libFuzzer target: ModelFile::Parse on GGUF files.
//
// Each input is parsed twice: as it is, so that every truncation and corruption is seen as a
// whole file (libFuzzer's buffer is exactly the input, so ASan catches any read past it), and
// as the head of a larger file padded with zeros, so that a header whose tensors lie beyond
// the input still reaches the shape, hyperparameter and vocabulary checks. The seed corpus is
// the headers of the real models (tests/fuzz/CMakeLists.txt).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "model/model_file.h"

namespace {

// Room for the tensor data of the largest reference model (mini-f32.gguf, 16 MB).
constexpr size_t kPaddedBytes = size_t{17} << 20;

// An accepted model must describe memory that exists: read the ends of every tensor.
void Touch(const shardrun::ModelFile& model) {
  volatile uint8_t sink = 0;
  for (const shardrun::TensorView& t : model.tensors()) {
    const auto* bytes = static_cast<const uint8_t*>(t.data);
    sink = sink ^ bytes[0] ^ bytes[t.bytes - 1];
    if (t.group_scales != nullptr) {
      const size_t scales = static_cast<size_t>(t.elements() / t.group_size);
      sink = sink ^ static_cast<uint8_t>(t.group_scales[scales - 1] != 0.0f);
    }
  }
  if (model.vocabulary().has_value()) {
    for (const std::string& piece : model.vocabulary()->pieces) sink = sink ^ piece.size();
  }
}

void ParseAndTouch(const uint8_t* data, size_t size) {
  auto model = shardrun::ModelFile::Parse("fuzz.gguf", data, size);
  if (model.ok()) Touch(**model);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ParseAndTouch(data, size);
  if (size > kPaddedBytes) return 0;
  // Zeroed once; only the input's bytes are written, and cleared again after the parse.
  static std::vector<uint8_t>* padded = new std::vector<uint8_t>(kPaddedBytes, 0);
  std::memcpy(padded->data(), data, size);
  std::memcpy(padded->data(), "GGUF", 4);  // keep to the GGUF reader even if the magic broke
  ParseAndTouch(padded->data(), padded->size());
  std::memset(padded->data(), 0, std::max<size_t>(size, 4));
  return 0;
}
