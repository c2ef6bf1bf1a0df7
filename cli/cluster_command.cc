// Sharded runs:
//   shardrun --shards 4 --type layer MODEL [generation options]       (workers on this host)
//   shardrun coordinator --listen tcp://0.0.0.0:5555 --shards N MODEL  (workers join from anywhere)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "auth/key_file.h"
#include "cli/commands.h"
#include "cli/generation.h"
#include "cli/link_options.h"
#include "cli/model_setup.h"
#include "coordinator/coordinator.h"
#include "coordinator/expert_calibration.h"
#include "coordinator/local_workers.h"
#include "coordinator/pipeline_runner.h"
#include "coordinator/remote_model.h"
#include "partitioner/byte_size.h"
#include "partitioner/partitioner.h"
#include "partitioner/plan_format.h"
#include "proto/message_codec.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

struct ClusterFlags {
  std::string model;
  int shards = 0;
  std::string type = "layer";
  std::string listen;
  std::string worker_mem = "1G";       // comma list, one per worker (the last repeats)
  std::string worker_threads = "1";    // comma list
  std::string worker_backend = "cpu";  // comma list: cpu, vulkan or auto per worker
  bool plan_only = false;
  std::string prompts_file;
  double register_timeout_s = 30;
  int parallel = 1;
  std::string act_type = "f32";
  int no_local_model_workers = 0;  // the first K local workers get their weights streamed
  std::string worker_cache_dir;    // their --cache-dir
  int tp = 0;                      // --type tensor: workers per stage (0 = all)
  std::string reduction = "all-to-all";
  std::string calibrate;  // --type expert: text whose router statistics place the experts
  int spares = 0;         // extra local workers kept out of the plan
  double recovery_timeout_s = 60;
  double step_timeout_s = 60;
  double worker_timeout_s = 2;
  bool no_rebalance = false;
  std::string poll = "auto";   // how the coordinator and local workers await messages
  std::string links = "auto";  // which links beside the sockets (proto/link.h)
  double coordinator_timeout_s = 10;
  std::string inject;    // "w1:kill@step=7,w2:stall@step=3:ms=3000": faults for local workers
  AccessOptions access;  // --key, --trust, --allow-keys, ... (coordinator/access_control.h)
  int clock_skew_s = 60;
  GenerationFlags generation;
};

// "a,b,c" -> element i (the last one repeats).
std::string Nth(const std::string& list, int i) {
  std::vector<std::string> parts = absl::StrSplit(list, ',', absl::SkipWhitespace());
  if (parts.empty()) return "";
  return parts[std::min<size_t>(static_cast<size_t>(i), parts.size() - 1)];
}

absl::StatusOr<std::vector<std::string>> ReadPrompts(const ClusterFlags& flags) {
  if (flags.prompts_file.empty()) return std::vector<std::string>{flags.generation.prompt};
  std::ifstream in(flags.prompts_file);
  if (!in) return absl::NotFoundError(absl::StrCat(flags.prompts_file, ": cannot read"));
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) prompts.push_back(line);
  }
  return prompts;
}

// Prompt `number` (1-based) as token ids the deployed model can generate after; an error is a
// fault of that prompt alone (empty, too long for the context, an id outside the vocabulary),
// so that a run serving a file of prompts reports it and goes on with the others.
absl::StatusOr<std::vector<int32_t>> RunnablePrompt(const Coordinator& c,
                                                    const GenerationFlags& flags,
                                                    const std::optional<Tokenizer>& tokenizer,
                                                    const std::string& text, size_t number) {
  absl::StatusOr<std::vector<int32_t>> ids = PromptIds(flags, tokenizer, text);
  absl::Status s = ids.status();
  if (s.ok()) s = CheckPrompt(*ids, c.context_length(), c.model().config().vocab_size);
  if (!s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt ", number, ": ", s.message()));
  }
  return ids;
}

// What a run that skipped `skipped` of `total` prompts returns (each was reported as skipped).
absl::Status SkippedPrompts(int skipped, size_t total) {
  if (skipped == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(skipped, " of ", total, " prompts could not run (reported above)"));
}

// p50 and p99 of the window's samples in microseconds, "-" when empty.
std::string Percentiles(const LatencyWindow& window) {
  const std::vector<int64_t> samples = window.Sorted();
  if (samples.empty()) return "-";
  auto at = [&](double q) { return samples[static_cast<size_t>(q * (samples.size() - 1))]; };
  return absl::StrCat("p50 ", at(0.5), " us, p99 ", at(0.99), " us");
}

// " (N by local link, M by TCP link)": how many hops into a stage took a link.
std::string LinkHops(const StageTimes& t) {
  std::vector<std::string> parts;
  if (t.local_link_hops > 0) parts.push_back(absl::StrCat(t.local_link_hops, " by local link"));
  if (t.tcp_link_hops > 0) parts.push_back(absl::StrCat(t.tcp_link_hops, " by TCP link"));
  return parts.empty() ? "" : absl::StrCat(" (", absl::StrJoin(parts, ", "), ")");
}

void PrintStageTimes(const Coordinator& c) {
  const ShardPlan& plan = c.plan();
  const size_t hidden_bytes = EncodedActivationBytes(c.options().activation_type, 1,
                                                     static_cast<size_t>(c.model().config().dim));
  std::fprintf(stderr, "activations: %zu bytes per token per hop (%s), %zu hops per token\n",
               hidden_bytes, wire::ActivationType_Name(c.options().activation_type).c_str(),
               plan.stages.size() > 0 ? plan.stages.size() - 1 : 0);
  for (size_t s = 0; s < c.stage_times().size(); ++s) {
    const StageTimes& t = c.stage_times()[s];
    const std::string& id =
        plan.workers[plan.assignments[plan.stages[s].assignments[0]].worker].worker_id;
    std::fprintf(
        stderr,
        "stage %zu (%s, layers %d..%d): %lld steps, %.2f ms compute, %.1f us/step; "
        "hop in: %s%s%s\n",
        s, id.c_str(), plan.stages[s].layers.begin, plan.stages[s].layers.end - 1,
        static_cast<long long>(t.steps), t.compute_us / 1000.0,
        t.steps ? static_cast<double>(t.compute_us) / t.steps : 0.0, Percentiles(t.hop_us).c_str(),
        // A batched (prompt) step's hop carries one row per token: not in the percentiles.
        t.batch_hops > 0
            ? absl::StrCat(" over one-token steps; ", t.batch_hops, " batched step",
                           t.batch_hops > 1 ? "s" : "", " up to ", t.batch_hop_max_us, " us")
                  .c_str()
            : "",
        LinkHops(t).c_str());
    if (plan.stages[s].assignments.size() > 1 && t.steps > 0) {
      std::fprintf(
          stderr,
          "  tensor-parallel group of %zu (%s): %.1f us/step adding partial sums, %.0f "
          "bytes/step sent by rank 0%s\n",
          plan.stages[s].assignments.size(), std::string(ReductionPathName(plan.reduction)).c_str(),
          static_cast<double>(t.sync_us) / t.steps, static_cast<double>(t.sync_bytes) / t.steps,
          t.sync_by_link > 0
              ? absl::StrCat(", ", t.sync_by_link, " partial sums taken by link").c_str()
              : "");
    }
  }
  if (plan.kind == PartitionKind::kExpert) {
    std::vector<int64_t> calls(plan.workers.size(), 0);
    for (const StageTimes& t : c.stage_times()) {
      for (size_t w = 0; w < t.expert_calls.size() && w < calls.size(); ++w)
        calls[w] += t.expert_calls[w];
    }
    int64_t total = 0;
    for (int64_t n : calls) total += n;
    std::vector<std::string> shares;
    for (size_t w = 0; w < calls.size(); ++w) {
      shares.push_back(absl::StrFormat("%s %lld (%.1f%%)", plan.workers[w].worker_id,
                                       static_cast<long long>(calls[w]),
                                       total > 0 ? 100.0 * calls[w] / total : 0.0));
    }
    std::fprintf(stderr, "expert calls served: %s\n", absl::StrJoin(shares, ", ").c_str());
  }
  std::fprintf(stderr, "hop back to the coordinator: %s\n", Percentiles(c.return_hop_us()).c_str());
  const Coordinator::DecodeSplit& d = c.decode_split();
  if (d.steps > 0) {
    std::fprintf(
        stderr,
        "decode step: %.1f us = %.1f us compute + %.1f us transport and waiting "
        "(mean of %lld steps)\n",
        static_cast<double>(d.wall_us) / d.steps, static_cast<double>(d.compute_us) / d.steps,
        static_cast<double>(d.wall_us - d.compute_us) / d.steps, static_cast<long long>(d.steps));
  }
}

// Pipeline mode: every prompt's text is printed, in prompt order, once it is complete
// (concurrent sequences cannot share one stream); rates go to stderr.
absl::Status RunPipelined(Coordinator& c, const ModelFile& model, const ClusterFlags& flags,
                          const std::optional<Tokenizer>& tokenizer,
                          const std::vector<std::string>& texts) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<size_t> numbers;  // each one's number in the file (1-based)
  int skipped = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = RunnablePrompt(c, flags.generation, tokenizer, texts[i], i + 1);
    if (!ids.ok() && texts.size() == 1) return ids.status();
    if (!ids.ok()) {
      spdlog::error("{}; skipped", std::string(ids.status().message()));
      ++skipped;
      continue;
    }
    prompts.push_back(*std::move(ids));
    numbers.push_back(i + 1);
  }
  if (prompts.empty()) return SkippedPrompts(skipped, texts.size());
  GenerateOptions options =
      MakeGenerateOptions(flags.generation, model, tokenizer, c.context_length());
  std::vector<std::string> outputs(prompts.size());
  std::vector<bool> done(prompts.size(), false);
  size_t printed = 0;
  int total_tokens = 0;
  const absl::Time start = absl::Now();
  auto on_done = [&](size_t i, const SequenceResult& r) {
    outputs[i] = RenderText(prompts[i], r.generated, options, tokenizer ? &*tokenizer : nullptr);
    done[i] = true;
    total_tokens += static_cast<int>(r.generated.size());
    const double s = absl::ToDoubleSeconds(r.elapsed);
    std::fprintf(stderr, "sequence %zu: %zu tokens in %.2f ms, %.2f tok/s\n", numbers[i],
                 r.generated.size(), s * 1000, s > 0 ? r.generated.size() / s : 0.0);
    if (flags.generation.emit_ids) {
      std::fprintf(stderr, "prompt_ids[%zu]: %s\ngenerated_ids[%zu]: %s\n", numbers[i],
                   absl::StrJoin(prompts[i], ",").c_str(), numbers[i],
                   absl::StrJoin(r.generated, ",").c_str());
    }
    while (printed < outputs.size() && done[printed]) {
      std::fwrite(outputs[printed].data(), 1, outputs[printed].size(), stdout);
      ++printed;
    }
    std::fflush(stdout);
  };
  auto results = RunPipeline(c, prompts, options, flags.parallel, on_done);
  if (!results.ok()) return results.status();
  const double s = absl::ToDoubleSeconds(absl::Now() - start);
  std::fprintf(
      stderr, "aggregate: %d tokens in %.2f ms, %.2f tok/s over %zu sequences, %d in flight\n",
      total_tokens, s * 1000, s > 0 ? total_tokens / s : 0.0, prompts.size(), flags.parallel);
  PrintStageTimes(c);
  return SkippedPrompts(skipped, texts.size());
}

absl::Status RunCluster(const ClusterFlags& flags, bool local) {
  auto kind = PartitionKindFromName(flags.type);
  if (!kind.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--type ", flags.type, ": expected layer, pipeline, tensor or expert"));
  }
  if (flags.shards < 1) return absl::InvalidArgumentError("--shards must be at least 1");
  auto model_path = ResolveModelPath(flags.model);
  if (!model_path.ok()) return model_path.status();
  auto model = ModelFile::Open(*model_path);
  if (!model.ok()) return model.status();
  auto tokenizer = LoadTokenizerFor(**model, flags.generation.tokenizer);
  if (!tokenizer.ok()) return tokenizer.status();
  auto prompts = ReadPrompts(flags);
  if (!prompts.ok()) return prompts.status();

  CoordinatorOptions options;
  options.listen = !flags.listen.empty() ? flags.listen : "tcp://127.0.0.1:0";
  options.expected_workers = flags.shards;
  options.kind = *kind;
  options.context_length = flags.generation.ctx_size;
  options.max_batch = flags.generation.batch_size;
  options.register_timeout = absl::Seconds(flags.register_timeout_s);
  options.recovery_timeout = absl::Seconds(flags.recovery_timeout_s);
  options.step_timeout = absl::Seconds(flags.step_timeout_s);
  options.worker_timeout = absl::Seconds(flags.worker_timeout_s);
  options.rebalance = !flags.no_rebalance;
  // The coordinator computes nothing, but local workers do: it spins only beside a spare core.
  int local_threads = 0;
  if (local) {
    for (int i = 0; i < flags.shards + flags.spares; ++i) {
      local_threads = std::max(local_threads, std::atoi(Nth(flags.worker_threads, i).c_str()));
    }
  }
  options.poll = ResolvePollMode(*ParsePollMode(flags.poll), local_threads);
  options.links = *ParseLinkMode(flags.links);
  options.coordinator_timeout = absl::Seconds(flags.coordinator_timeout_s);
  options.access = flags.access;
  options.access.clock_skew = std::chrono::seconds(flags.clock_skew_s);
  if (flags.spares < 0 || (flags.spares > 0 && !local)) {
    return absl::InvalidArgumentError("--spares K starts K extra local workers");
  }
  options.spares = flags.spares;
  options.expected_workers = flags.shards + flags.spares;
  if (flags.parallel > 1 && *kind != PartitionKind::kPipeline) {
    return absl::InvalidArgumentError("--parallel needs --type pipeline");
  }
  options.max_sequences = flags.parallel;
  if (flags.tp != 0 && *kind != PartitionKind::kTensor) {
    return absl::InvalidArgumentError("--tp needs --type tensor");
  }
  options.tensor_parallel = flags.tp;
  auto reduction = ReductionPathFromName(flags.reduction);
  if (!reduction.has_value() || *reduction == ReductionPath::kNone) {
    return absl::InvalidArgumentError(
        absl::StrCat("--reduction ", flags.reduction, ": expected all-to-all or gather-broadcast"));
  }
  options.reduction = *reduction;
  if (!flags.calibrate.empty()) {
    if (*kind != PartitionKind::kExpert) {
      return absl::InvalidArgumentError("--calibrate needs --type expert");
    }
    std::ifstream in(flags.calibrate);
    if (!in) return absl::NotFoundError(absl::StrCat(flags.calibrate, ": cannot read"));
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!tokenizer->has_value()) {
      return absl::FailedPreconditionError(
          "--calibrate needs the model's vocabulary (--tokenizer)");
    }
    const std::vector<int32_t> ids = (*tokenizer)->Encode(text, true, false);
    auto load = MeasureExpertLoad(**model, ids, 1);
    if (!load.ok()) return load.status();
    spdlog::info("calibration: router statistics over {} tokens of {}", ids.size(),
                 flags.calibrate);
    options.expert_load = *std::move(load);
  }
  if (flags.act_type == "f32") {
    options.activation_type = wire::ACTIVATION_F32;
  } else if (flags.act_type == "f16") {
    options.activation_type = wire::ACTIVATION_F16;
  } else if (flags.act_type == "q8_0") {
    if ((*model)->config().dim % 32 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--act-type q8_0 needs a model dimension that is a multiple of 32; this one is ",
          (*model)->config().dim));
    }
    options.activation_type = wire::ACTIVATION_Q8_0;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--act-type ", flags.act_type, ": expected f32, f16 or q8_0"));
  }
  if (local) {
    for (int i = 0; i < options.expected_workers; ++i) {
      options.expected_ids.push_back(absl::StrCat("w", i));
    }
  }
  auto coordinator = Coordinator::Create(options, **model);
  if (!coordinator.ok()) return coordinator.status();
  Coordinator& c = **coordinator;

  LocalWorkers children;
  if (local) {
    for (int i = 0; i < options.expected_workers; ++i) {
      auto mem = ParseByteSize(Nth(flags.worker_mem, i));
      if (!mem.ok()) return mem.status();
      std::vector<std::string> args = {
          "--connect",   c.endpoint(),
          "--id",        options.expected_ids[i],
          "--mem",       Nth(flags.worker_mem, i),
          "--threads",   Nth(flags.worker_threads, i),
          "--log-level", std::string(spdlog::level::to_string_view(spdlog::get_level()).data())};
      args.insert(args.end(), {"--backend", Nth(flags.worker_backend, i), "--poll", flags.poll});
      args.insert(args.end(), {"--links", flags.links});
      if (!flags.access.key_dir.empty()) {
        // Same origin: local workers share the coordinator's keys, which it lists itself.
        args.insert(args.end(), {"--key", flags.access.key_dir, "--server-key",
                                 auth::KeyPaths(flags.access.key_dir).curve_public});
      }
      const std::vector<std::string> faults = absl::StrSplit(flags.inject, ',', absl::SkipEmpty());
      for (const std::string& fault : faults) {
        const std::string prefix = options.expected_ids[i] + ":";
        if (fault.starts_with(prefix))
          args.insert(args.end(), {"--inject", fault.substr(prefix.size())});
      }
      if (Nth(flags.worker_backend, i) != "cpu") {
        args.insert(args.end(), {"--gpu-mem", Nth(flags.worker_mem, i)});
      }
      if (i < flags.no_local_model_workers) {
        args.push_back("--no-local-model");
        if (!flags.worker_cache_dir.empty()) {
          args.insert(args.end(), {"--cache-dir", flags.worker_cache_dir});
        }
      } else {
        args.insert(args.end(), {"--model", *model_path});
      }
      if (absl::Status s = children.Start(options.expected_ids[i], args); !s.ok()) return s;
    }
  }
  auto finish = [&](absl::Status status) {
    c.Shutdown(status.ok() ? "done" : "coordinator failed");
    children.StopAll(absl::Seconds(2));
    return status;
  };

  if (absl::Status s = c.WaitForWorkers(); !s.ok()) return finish(s);
  auto plan = c.Plan();
  if (!plan.ok()) return finish(plan.status());
  const std::string table = FormatPlan(*plan);
  if (flags.plan_only) {
    std::fputs(table.c_str(), stdout);
    return finish(absl::OkStatus());
  }
  std::fputs(table.c_str(), stderr);
  if (absl::Status s = c.DeployWithRecovery(*plan); !s.ok()) return finish(s);

  if (*kind == PartitionKind::kPipeline) {
    return finish(RunPipelined(c, **model, flags, *tokenizer, *prompts));
  }
  uint64_t sequence = 1;
  int skipped = 0;
  for (size_t i = 0; i < prompts->size(); ++i) {
    auto prompt = RunnablePrompt(c, flags.generation, *tokenizer, (*prompts)[i], i + 1);
    if (!prompt.ok() && prompts->size() == 1) return finish(prompt.status());
    if (!prompt.ok()) {
      spdlog::error("{}; skipped", std::string(prompt.status().message()));
      ++skipped;
      continue;
    }
    RemoteModel remote(c, sequence++);
    if (absl::Status s = StreamGeneration(remote, **model, flags.generation, *tokenizer, *prompt);
        !s.ok()) {
      return finish(s);
    }
  }
  PrintStageTimes(c);
  return finish(SkippedPrompts(skipped, prompts->size()));
}

void AddClusterOptions(CLI::App* cmd, ClusterFlags* flags, bool local) {
  cmd->add_option("--shards", flags->shards, "Number of workers");
  cmd->add_option("--type", flags->type, "Partition: layer, pipeline, tensor or expert");
  cmd->add_flag("--plan", flags->plan_only, "Print the plan and exit");
  cmd->add_option(
      "--prompts", flags->prompts_file,
      "Serve each line of FILE as a prompt (one the model cannot take is reported and skipped)");
  cmd->add_option("--act-type", flags->act_type,
                  "Encoding of hidden states between stages: f32 (exact), f16, q8_0");
  cmd->add_option("--parallel", flags->parallel, "Sequences in flight at once (--type pipeline)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--tp", flags->tp,
                  "--type tensor: workers per stage; must divide --shards (default: all in one "
                  "stage)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--reduction", flags->reduction,
                  "--type tensor: how a stage adds partial sums: all-to-all (one hop) or "
                  "gather-broadcast (through rank 0, two hops)");
  cmd->add_option("--recovery-timeout", flags->recovery_timeout_s,
                  "Seconds to wait for a worker able to hold a lost shard (0: no recovery)");
  cmd->add_option("--step-timeout", flags->step_timeout_s,
                  "Seconds a step may take before the coordinator recovers it");
  cmd->add_option("--coordinator-timeout", flags->coordinator_timeout_s,
                  "Seconds of coordinator silence after which workers exit (or, with "
                  "--wait-coordinator, wait for a new one)");
  cmd->add_option("--poll", flags->poll,
                  "How the coordinator and local workers await activations and logits: spin "
                  "around their predicted arrival, block, or auto (the default: spin when the "
                  "host has a core beyond the workers' threads; bench/README.md)")
      ->check(CLI::IsMember({"auto", "spin", "block"}));
  AddLinkOptions(cmd, &flags->links);
  cmd->add_flag("--no-rebalance", flags->no_rebalance,
                "Keep the layer split even when a stage is persistently slower");
  cmd->add_option("--worker-timeout", flags->worker_timeout_s,
                  "Seconds of silence after which a worker is declared dead");
  cmd->add_option("--calibrate", flags->calibrate,
                  "--type expert: place experts by the router statistics of the text in FILE");
  cmd->add_option("--register-timeout", flags->register_timeout_s,
                  "Seconds to wait for the workers to register");
  cmd->add_option("--key", flags->access.key_dir,
                  "This cluster's keys (`shardrun keygen` DIR): CURVE on every socket, and "
                  "workers must be listed or prove a permission token");
  cmd->add_option("--trust", flags->access.trust,
                  "A trusted token issuer's sign.pub (the model owner's; repeatable)");
  cmd->add_option("--allow-keys", flags->access.allow_keys,
                  "Transport keys admitted without a token (same-origin workers): a curve.pub, "
                  "or lines of 'Z85KEY [ORIGIN]'");
  cmd->add_option("--revocations", flags->access.revocations,
                  "Revoked token ids, one per line (re-read when the file changes)");
  cmd->add_option("--audience", flags->access.audience,
                  "This cluster's name: tokens for another audience are refused");
  cmd->add_option("--owner", flags->access.owner,
                  "The model owner's origin, whose keys alone may issue tokens (default: the "
                  "origin of --key)");
  cmd->add_option("--clock-skew", flags->clock_skew_s,
                  "Seconds of clock difference tolerated when checking token lifetimes")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--insecure", flags->access.insecure,
                "Listen off loopback without CURVE: anyone who reaches the port may join");
  if (local) {
    cmd->add_option("--worker-mem", flags->worker_mem, "Memory per worker: 512M,1G,...");
    cmd->add_option("--worker-threads", flags->worker_threads, "Threads per worker: 1,2,...");
    cmd->add_option("--spares", flags->spares,
                    "Start K extra workers kept out of the plan, to replace a lost one at once");
    cmd->add_option("--inject", flags->inject,
                    "Testing: faults for local workers, e.g. w1:kill@step=7,w2:drop@step=3 "
                    "(kinds: worker/fault_injection.h; gpu-lost@step=N and gpu-oom@load for "
                    "Vulkan workers)");
    cmd->add_option("--worker-backend", flags->worker_backend,
                    "Backend per worker: cpu,vulkan,auto,... (a GPU worker's --worker-mem is "
                    "its GPU memory)");
    cmd->add_option("--no-local-model-workers", flags->no_local_model_workers,
                    "Start the first K workers without the model file (weights are streamed)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--worker-cache-dir", flags->worker_cache_dir,
                    "--cache-dir of the workers started without the model file");
  } else {
    cmd->add_option("--listen", flags->listen, "Control endpoint, tcp://0.0.0.0:5555")->required();
  }
}

}  // namespace

void AddClusterCommands(CLI::App& app, int* exit_code) {
  // The root command: `shardrun --shards N MODEL` runs workers on this host.
  auto local = std::make_shared<ClusterFlags>();
  AddClusterOptions(&app, local.get(), /*local=*/true);
  app.add_option("model", local->model, "Model file (default: the built-in synthetic model)");
  AddGenerationOptions(&app, &local->generation);
  app.callback([local, exit_code, &app] {
    if (!app.get_subcommands().empty()) return;  // a subcommand ran instead
    if (local->shards < 1) {
      std::fputs(app.help().c_str(), stderr);
      *exit_code = 2;
      return;
    }
    if (absl::Status s = RunCluster(*local, true); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 1;
    }
  });

  auto remote = std::make_shared<ClusterFlags>();
  CLI::App* cmd =
      app.add_subcommand("coordinator", "Coordinate workers that join over the network");
  AddClusterOptions(cmd, remote.get(), /*local=*/false);
  cmd->add_option("model", remote->model, "Model file")->required();
  AddGenerationOptions(cmd, &remote->generation);
  cmd->callback([remote, exit_code] {
    if (absl::Status s = RunCluster(*remote, false); !s.ok()) {
      spdlog::error("{}", std::string(s.message()));
      *exit_code = 1;
    }
  });
}

}  // namespace shardrun
