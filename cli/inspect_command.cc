// `shardrun inspect MODEL`: what a model file holds, without running it.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "model/model_file.h"

namespace shardrun {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  return "{" + absl::StrJoin(shape, ", ") + "}";
}

std::string TypeString(const TensorView& t) {
  std::string type(TensorTypeName(t.type));
  if (t.type == TensorType::kQ8Group) type += absl::StrFormat("/%d", t.group_size);
  return type;
}

// The layer a "blk.N.*" tensor belongs to; -1 for the others (embedding, output, ...).
int LayerOf(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  int layer;
  if (dot == std::string::npos || !absl::SimpleAtoi(name.substr(4, dot - 4), &layer)) return -1;
  return layer;
}

std::string Mib(uint64_t bytes) {
  return absl::StrFormat("%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

void PrintConfig(const ModelFile& model) {
  const ModelConfig& c = model.config();
  absl::PrintF("file          %s (%d bytes)\n", model.path(), model.file_size());
  absl::PrintF("format        %s\n", std::string(ModelFormatName(model.format())));
  absl::PrintF("architecture  %s\n", c.architecture);
  absl::PrintF("name          %s\n", c.name.empty() ? "(none)" : c.name);
  absl::PrintF("\nhyperparameters\n");
  absl::PrintF("  dim             %d\n", c.dim);
  absl::PrintF("  hidden_dim      %d%s\n", c.hidden_dim, c.is_moe() ? " (per expert)" : "");
  absl::PrintF("  n_layers        %d\n", c.n_layers);
  absl::PrintF("  n_heads         %d (head size %d)\n", c.n_heads, c.head_size());
  absl::PrintF("  n_kv_heads      %d (kv_dim %d)\n", c.n_kv_heads, c.kv_dim());
  absl::PrintF("  vocab_size      %d\n", c.vocab_size);
  absl::PrintF("  context_length  %d\n", c.context_length);
  absl::PrintF("  rope_freq_base  %g\n", c.rope_freq_base);
  absl::PrintF("  rms_norm_eps    %g\n", c.rms_norm_eps);
  absl::PrintF("  tied_output     %s\n", c.tied_output ? "true (output = token_embd)" : "false");
  if (c.is_moe()) {
    absl::PrintF("  n_experts       %d (%d used per token)\n", c.n_experts, c.n_experts_used);
  } else {
    absl::PrintF("  n_experts       0 (dense)\n");
  }
  if (const auto& v = model.vocabulary(); v.has_value()) {
    absl::PrintF(
        "\nvocabulary      %d tokens, bos %d, eos %d, unk %d, add_bos %s, add_space_prefix %s, "
        "longest piece %d bytes\n",
        v->size(), v->bos_id, v->eos_id, v->unk_id, v->add_bos ? "true" : "false",
        v->add_space_prefix ? "true" : "false", v->max_piece_length);
  } else {
    absl::PrintF("\nvocabulary      none in the file\n");
  }
}

void PrintMetadata(const ModelFile& model) {
  absl::PrintF("\nmetadata (%d entries)\n", model.metadata().size());
  for (const auto& [key, value] : model.metadata()) absl::PrintF("  %s = %s\n", key, value);
}

void PrintTensors(const ModelFile& model) {
  size_t name_width = 4, type_width = 4, shape_width = 5;
  for (const TensorView& t : model.tensors()) {
    name_width = std::max(name_width, t.name.size());
    type_width = std::max(type_width, TypeString(t).size());
    shape_width = std::max(shape_width, ShapeString(t.shape).size());
  }
  const int nw = static_cast<int>(name_width), tw = static_cast<int>(type_width),
            sw = static_cast<int>(shape_width);
  absl::PrintF("\ntensors (%d)\n", model.tensors().size());
  absl::PrintF("  %-*s  %-*s  %-*s  %12s  %12s\n", nw, "name", tw, "type", sw, "shape", "bytes",
               "offset");
  for (const TensorView& t : model.tensors()) {
    absl::PrintF("  %-*s  %-*s  %-*s  %12d  %12d\n", nw, t.name, tw, TypeString(t), sw,
                 ShapeString(t.shape), t.total_bytes(), t.file_offset);
  }
}

void PrintBytesPerLayer(const ModelFile& model) {
  std::map<int, uint64_t> per_layer;  // -1: tensors outside the layers
  std::vector<std::string> others;
  uint64_t total = 0;
  for (const TensorView& t : model.tensors()) {
    const int layer = LayerOf(t.name);
    per_layer[layer] += t.total_bytes();
    if (layer < 0) others.push_back(t.name);
    total += t.total_bytes();
  }
  absl::PrintF("\nbytes per layer\n");
  for (const auto& [layer, bytes] : per_layer) {
    if (layer >= 0) absl::PrintF("  layer %-5d %12d  (%s)\n", layer, bytes, Mib(bytes));
  }
  absl::PrintF("  other       %12d  (%s: %s)\n", per_layer[-1], Mib(per_layer[-1]),
               absl::StrJoin(others, ", "));
  absl::PrintF("total         %12d  (%s) in %d tensors; file %d bytes\n", total, Mib(total),
               model.tensors().size(), model.file_size());
}

int RunInspect(const std::string& path) {
  absl::StatusOr<std::unique_ptr<ModelFile>> model = ModelFile::Open(path);
  if (!model.ok()) {
    absl::FPrintF(stderr, "shardrun inspect: %s\n", model.status().message());
    return 1;
  }
  PrintConfig(**model);
  PrintMetadata(**model);
  PrintTensors(**model);
  PrintBytesPerLayer(**model);
  return 0;
}

}  // namespace

void AddInspectCommand(CLI::App& app, int* exit_code) {
  CLI::App* command = app.add_subcommand(
      "inspect", "Print a model file's format, hyperparameters, metadata and tensor table");
  auto path = std::make_shared<std::string>();
  command->add_option("model", *path, "GGUF or llama2.c model file")->required();
  command->callback([path, exit_code] { *exit_code = RunInspect(*path); });
}

}  // namespace shardrun
