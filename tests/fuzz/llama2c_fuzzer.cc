// libFuzzer target: ModelFile::Parse on llama2.c checkpoints (legacy, version 1 and 2).
//
// An input starting with "GGUF" has its magic broken so that the llama2.c reader is always
// the one fuzzed; "ak42" inputs go to the version-1/2 parser and everything else to the legacy
// one. A llama2.c file must have exactly the size its header implies, so a mutated header
// alone would rarely get past that check: when the reader says how many bytes the header
// needs, the input is parsed again, extended to that size. The seed corpus is the
// headers of the real checkpoints (tests/fuzz/CMakeLists.txt).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "model/model_file.h"

namespace {

// Larger claims are only parsed once: thousands of tiny layers cost time, not coverage.
constexpr size_t kMaxPaddedBytes = size_t{4} << 20;

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
}

// The N of "... which needs N bytes; ..." in a size error, or 0.
size_t NeededBytes(const std::string& message) {
  static constexpr char kNeeds[] = "which needs ";
  const size_t at = message.find(kNeeds);
  if (at == std::string::npos) return 0;
  const size_t begin = at + sizeof(kNeeds) - 1;
  const size_t end = message.find(' ', begin);
  size_t needed;
  if (end == std::string::npos || !absl::SimpleAtoi(message.substr(begin, end - begin), &needed)) {
    return 0;
  }
  return needed;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) file[0] ^= 0x80;
  auto model = shardrun::ModelFile::Parse("fuzz.bin", file.data(), file.size());
  if (model.ok()) {
    Touch(**model);
    return 0;
  }
  const size_t needed = NeededBytes(std::string(model.status().message()));
  if (needed == 0 || needed > kMaxPaddedBytes) return 0;
  // Exactly `needed` bytes, so that ASan still sees reads past the end; left uninitialised
  // (only the header is parsed) because zeroing megabytes per input would slow the fuzzer.
  std::unique_ptr<uint8_t[]> padded(new uint8_t[needed]);
  std::memcpy(padded.get(), file.data(), std::min(needed, file.size()));
  model = shardrun::ModelFile::Parse("fuzz.bin", padded.get(), needed);
  if (model.ok()) Touch(**model);
  return 0;
}
