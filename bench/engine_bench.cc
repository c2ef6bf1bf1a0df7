// Prefill and decode tokens/s of the single-process engine, as a table.
//
//   engine_bench MODEL [MODEL...] [--threads 1,2] [--prompt 128] [--gen 64] [--repeat 3]
//                [--tsv]
//
// For each model and thread count: prefill of a `--prompt`-token prompt (batched), then
// `--gen` decode steps; the median of `--repeat` runs (after one warm-up run) is printed,
// with the weight bytes a decode step reads (every tensor but the embedding table, of which
// it reads one row) and the rate at which it reads them. `--tsv` prints tab-separated
// columns without the header, for scripts (bench/compare_llamacpp.py).
// Prompt tokens are fixed pseudo-random ids, so any model can be measured, text or not.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "engine/local_model.h"
#include "engine/sampler.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/model_file.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

struct Rates {
  double prefill = 0;  // tokens/s
  double decode = 0;
};

absl::StatusOr<Rates> RunOnce(const ModelFile& model, Backend& backend, int prompt_tokens,
                              int gen_tokens, int batch) {
  const int context = prompt_tokens + gen_tokens + 1;
  auto local = LocalModel::Create(model, backend, batch, context);
  if (!local.ok()) return local.status();
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_tokens));
  uint64_t state = 12345;
  for (int32_t& t : prompt) {
    t = static_cast<int32_t>(Sampler::RandomU32(&state) % model.config().vocab_size);
  }
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  const absl::Time t0 = absl::Now();
  for (int pos = 0; pos < prompt_tokens; pos += batch) {
    const int n = std::min(batch, prompt_tokens - pos);
    if (absl::Status s =
            (*local)->Compute(pos, std::span<const int32_t>(prompt).subspan(pos, n), logits);
        !s.ok()) {
      return s;
    }
  }
  const absl::Time t1 = absl::Now();
  int32_t token = Argmax(logits);
  for (int i = 0; i < gen_tokens; ++i) {
    if (absl::Status s = (*local)->Compute(prompt_tokens + i, {&token, 1}, logits); !s.ok()) {
      return s;
    }
    token = Argmax(logits);
  }
  const absl::Time t2 = absl::Now();
  return Rates{prompt_tokens / absl::ToDoubleSeconds(t1 - t0),
               gen_tokens / absl::ToDoubleSeconds(t2 - t1)};
}

// What one decode step reads of the weights: everything but the embedding table (one row),
// unless the output matrix is the embedding table itself (tied), which it then reads whole.
int64_t DecodeWeightBytes(const ModelFile& model) {
  int64_t bytes = 0;
  for (const TensorView& t : model.tensors()) {
    if (t.name == "token_embd.weight" && model.Find("output.weight") != nullptr) continue;
    bytes += static_cast<int64_t>(t.total_bytes());
  }
  return bytes;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace
}  // namespace shardrun

int main(int argc, char** argv) {
  using namespace shardrun;
  CLI::App app{"Prefill and decode tokens/s of the single-process engine"};
  std::vector<std::string> models;
  std::vector<int> threads = {1, 2};
  int prompt = 128, gen = 64, repeat = 3, batch = 128;
  app.add_option("models", models, "Model files")->required();
  app.add_option("--threads", threads, "Thread counts")->delimiter(',');
  app.add_option("--prompt", prompt, "Prompt tokens")->check(CLI::PositiveNumber);
  app.add_option("--gen", gen, "Decode steps")->check(CLI::PositiveNumber);
  app.add_option("--repeat", repeat, "Measured runs (median)")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "Prefill batch")->check(CLI::PositiveNumber);
  bool tsv = false;
  app.add_flag("--tsv", tsv,
               "Tab-separated rows without header: model, weights, threads, "
               "prefill tok/s, decode tok/s, decode weight bytes, decode GB/s");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  if (!tsv) {
    std::vector<std::string> args(argv, argv + argc);
    std::printf("command: %s\n\n", absl::StrJoin(args, " ").c_str());
    std::printf(
        "| model | weights | threads | prefill tok/s (%d tokens) | decode tok/s (%d tokens) | "
        "decode weights read | decode GB/s |\n",
        prompt, gen);
    std::printf("|---|---|---|---|---|---|---|\n");
  }
  for (const std::string& path : models) {
    auto model = ModelFile::Open(path);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    const TensorView* wq = (*model)->Find("blk.0.attn_q.weight");
    const std::string type = wq ? std::string(TensorTypeName(wq->type)) : "?";
    for (int t : threads) {
      auto backend = CpuBackend::Create(t);
      if (!backend.ok()) return 1;
      std::vector<double> prefill, decode;
      for (int r = 0; r <= repeat; ++r) {  // run 0 warms caches and page-ins
        auto rates = RunOnce(**model, **backend, prompt, gen, batch);
        if (!rates.ok()) {
          std::fprintf(stderr, "%s\n", std::string(rates.status().message()).c_str());
          return 1;
        }
        if (r > 0) {
          prefill.push_back(rates->prefill);
          decode.push_back(rates->decode);
        }
      }
      const std::string name = path.substr(path.find_last_of('/') + 1);
      const int64_t bytes = DecodeWeightBytes(**model);
      const double decode_rate = Median(decode);
      if (tsv) {
        std::printf("%s\t%s\t%d\t%.2f\t%.2f\t%lld\t%.2f\n", name.c_str(), type.c_str(), t,
                    Median(prefill), decode_rate, static_cast<long long>(bytes),
                    decode_rate * static_cast<double>(bytes) / 1e9);
      } else {
        std::printf("| %s | %s | %d | %.1f | %.1f | %.0f MB | %.1f |\n", name.c_str(), type.c_str(),
                    t, Median(prefill), decode_rate, static_cast<double>(bytes) / 1e6,
                    decode_rate * static_cast<double>(bytes) / 1e9);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
