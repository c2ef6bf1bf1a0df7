// `shardrun synth OUT.gguf`: writes a synthetic llama model of any shape and weight type.
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "kernels/tensor_type.h"
#include "model/synth_model.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

// The options as given; each one given overrides the preset's value.
struct SynthFlags {
  std::string out;
  std::string preset = "tiny";
  std::string name;
  std::string type;
  SynthSpec values;  // storage for the numeric options
  bool tied = false;
  bool untied = false;
  int threads = 0;
};

absl::StatusOr<SynthSpec> BuildSpec(const SynthFlags& flags, const CLI::App& cmd) {
  absl::StatusOr<SynthSpec> preset = SynthPreset(flags.preset);
  if (!preset.ok()) return preset.status();
  SynthSpec spec = *preset;
  bool custom = false;  // shape or type differs from the preset: name it "synthetic-custom"
  auto take = [&](const char* option, auto& field, const auto& value, bool shape) {
    if (cmd.count(option) == 0) return;
    field = value;
    custom |= shape;
  };
  const SynthSpec& v = flags.values;
  take("--dim", spec.dim, v.dim, true);
  take("--hidden", spec.hidden_dim, v.hidden_dim, true);
  take("--layers", spec.n_layers, v.n_layers, true);
  take("--heads", spec.n_heads, v.n_heads, true);
  take("--kv-heads", spec.n_kv_heads, v.n_kv_heads, true);
  take("--vocab", spec.vocab_size, v.vocab_size, true);
  take("--ctx", spec.context_length, v.context_length, true);
  take("--rope-base", spec.rope_freq_base, v.rope_freq_base, true);
  take("--rms-eps", spec.rms_eps, v.rms_eps, true);
  take("--experts", spec.n_experts, v.n_experts, true);
  take("--experts-used", spec.n_experts_used, v.n_experts_used, true);
  if (cmd.count("--experts-used") == 0) {
    // Follow --experts: dense has none; a MoE preset keeps its count, others use 2 (Mixtral).
    if (spec.n_experts == 0) {
      spec.n_experts_used = 0;
    } else if (spec.n_experts_used == 0 || spec.n_experts_used > spec.n_experts) {
      spec.n_experts_used = std::min(2, spec.n_experts);
    }
  }
  take("--seed", spec.seed, v.seed, false);
  take("--std", spec.std, v.std, false);
  if (flags.tied || flags.untied) {
    custom |= spec.tied_output != flags.tied;
    spec.tied_output = flags.tied;
  }
  if (!flags.type.empty()) {
    std::optional<TensorType> type = TensorTypeFromName(flags.type);
    if (!type.has_value() || *type == TensorType::kQ8Group) {
      return absl::InvalidArgumentError(
          absl::StrCat("--type ", flags.type, ": expected f32, f16, bf16, q8_0 or q4_0"));
    }
    custom |= spec.weight_type != *type;
    spec.weight_type = *type;
  }
  if (!flags.name.empty()) {
    spec.name = flags.name;
  } else if (custom) {
    spec.name = "synthetic-custom";
  }
  return spec;
}

}  // namespace

void AddSynthCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<SynthFlags>();
  CLI::App* cmd = app.add_subcommand(
      "synth",
      "Write a synthetic llama model (seeded random weights, generated vocabulary) as GGUF. "
      "Options override the preset's values.");
  cmd->add_option("out", flags->out, "Output .gguf path")->required();
  std::vector<std::string> presets;
  for (std::string_view p : SynthPresetNames()) presets.emplace_back(p);
  cmd->add_option("--preset", flags->preset,
                  "tiny (dim 288, 6 layers, q8_0), mini (dim 256, 4 layers, f32), tinyllama "
                  "(TinyLlama-1.1B's shape, q4_0), moe-mini (8 experts, 2 used, f32)")
      ->check(CLI::IsMember(presets))
      ->capture_default_str();
  SynthSpec& v = flags->values;
  cmd->add_option("--dim", v.dim, "Embedding size");
  cmd->add_option("--hidden", v.hidden_dim, "Feed-forward size (per expert)");
  cmd->add_option("--layers", v.n_layers, "Transformer blocks");
  cmd->add_option("--heads", v.n_heads, "Attention heads");
  cmd->add_option("--kv-heads", v.n_kv_heads, "Key/value heads (fewer: grouped-query attention)");
  cmd->add_option("--vocab", v.vocab_size, "Vocabulary size (at least 259)");
  cmd->add_option("--ctx", v.context_length, "Context length");
  cmd->add_option("--type", flags->type, "Weight type: f32, f16, bf16, q8_0, q4_0");
  cmd->add_option("--seed", v.seed, "Random seed");
  cmd->add_option("--std", v.std, "Standard deviation of the weights");
  cmd->add_option("--rope-base", v.rope_freq_base, "RoPE frequency base");
  cmd->add_option("--rms-eps", v.rms_eps, "RMSNorm epsilon");
  cmd->add_option("--experts", v.n_experts, "Mixture-of-experts: number of experts (0: dense)");
  cmd->add_option("--experts-used", v.n_experts_used, "Experts used per token");
  auto* tied = cmd->add_flag("--tied", flags->tied, "Share the output head with the embedding");
  auto* untied = cmd->add_flag("--untied", flags->untied, "Separate output.weight (the default)");
  tied->excludes(untied);
  cmd->add_option("--name", flags->name, "general.name (default: synthetic-<preset>)");
  cmd->add_option("--threads", flags->threads, "Generator threads (0: all cores)");
  cmd->callback([flags, cmd, exit_code] {
    absl::StatusOr<SynthSpec> spec = BuildSpec(*flags, *cmd);
    absl::Status status = spec.status();
    if (status.ok()) status = WriteSynthModel(*spec, flags->out, flags->threads);
    if (!status.ok()) {
      spdlog::error("{}", std::string(status.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace shardrun
