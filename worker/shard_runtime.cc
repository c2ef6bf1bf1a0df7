#include "worker/shard_runtime.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "proto/message_codec.h"

namespace shardrun {
namespace {

// Reads every page of the slice's tensors once, so the first token does not pay for page
// faults and the user sees honest load progress.
void PageIn(const ModelFile& model, const ModelSlice& slice,
            const std::function<void(int64_t, int64_t)>& progress) {
  const std::vector<const TensorView*> tensors = SliceTensors(model, slice);
  int64_t total = 0;
  for (const TensorView* t : tensors) total += static_cast<int64_t>(t->total_bytes());
  int64_t done = 0;
  volatile uint8_t sink = 0;
  for (const TensorView* t : tensors) {
    const auto* p = static_cast<const uint8_t*>(t->data);
    for (size_t i = 0; i < t->bytes; i += 4096) sink = sink + p[i];
    done += static_cast<int64_t>(t->total_bytes());
    if (progress) progress(done, total);
  }
  if (progress && tensors.empty()) progress(0, 0);
}

}  // namespace

std::vector<const TensorView*> SliceTensors(const ModelFile& model, const ModelSlice& slice) {
  std::vector<const TensorView*> tensors;
  for (const TensorView& t : model.tensors()) {
    const bool is_layer = t.name.rfind("blk.", 0) == 0;
    int layer = -1;
    if (is_layer) layer = std::atoi(t.name.c_str() + 4);
    const bool elsewhere = !slice.experts && t.name.find("_exps.") != std::string::npos;
    const bool wanted =
        (is_layer && slice.layers.contains(layer) && !elsewhere) ||
        (slice.embedding && t.name == "token_embd.weight") ||
        (slice.head && (t.name == "output_norm.weight" || t.name == "output.weight" ||
                        (model.config().tied_output && t.name == "token_embd.weight")));
    if (wanted) tensors.push_back(&t);
  }
  return tensors;
}

ModelSlice SliceOf(const wire::Assign& assign) {
  ModelSlice slice{assign.slice().embedding(),
                   {assign.slice().layer_begin(), assign.slice().layer_end()},
                   assign.slice().head()};
  slice.experts = assign.expert_map_size() == 0;  // expert plans: experts run elsewhere
  if (assign.tensor_split()) {
    auto range = [](const wire::Range& r) { return IndexRange{r.begin(), r.end()}; };
    slice.split =
        TensorSplit{range(assign.kv_heads()), range(assign.ffn_columns()), range(assign.vocab())};
  }
  return slice;
}

absl::StatusOr<std::unique_ptr<ShardRuntime>> ShardRuntime::Load(
    const ModelFile& model, const wire::Assign& assign, const BackendOptions& backend_options,
    PartialSumReducer* reducer, ExpertDispatcher* experts,
    const std::function<void(int64_t, int64_t)>& progress) {
  const ModelSlice slice = SliceOf(assign);
  const bool has_stage = slice.embedding || slice.head || slice.layers.size() > 0;
  if (!has_stage && assign.experts_size() == 0) {
    return absl::InvalidArgumentError("the assignment gives this worker nothing to hold");
  }
  if (has_stage) {
    if (absl::Status s = ValidateSlice(slice, model.config()); !s.ok()) return s;
  }
  if (assign.max_batch() < 1 || assign.max_batch() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch ", assign.max_batch()));
  }
  if (assign.context_length() < 1 || assign.context_length() > model.config().context_length) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "context length %d outside 1..%d", assign.context_length(), model.config().context_length));
  }
  std::unique_ptr<ShardRuntime> runtime(new ShardRuntime());
  runtime->assign_ = assign;
  PageIn(model, slice, progress);
  auto backend = CreateBackend(backend_options);
  if (!backend.ok()) return backend.status();
  runtime->backend_ = *std::move(backend);
  runtime->slice_ = slice;
  runtime->dim_ = model.config().dim;
  if (assign.experts_size() > 0) {
    std::vector<std::pair<int, int>> held;
    for (const wire::ExpertRef& e : assign.experts()) held.push_back({e.layer(), e.expert()});
    auto bank = ExpertBank::Load(model, held, *runtime->backend_);
    if (!bank.ok()) return bank.status();
    runtime->bank_ = *std::move(bank);
  }
  if (!has_stage) return runtime;
  auto stage = StageForward::Create(model, slice, *runtime->backend_, assign.max_batch(), reducer);
  if (!stage.ok()) return stage.status();
  runtime->stage_ = *std::move(stage);
  runtime->stage_->set_expert_dispatcher(experts);
  runtime->output_.resize(runtime->stage_->OutputSize(assign.max_batch()));
  runtime->input_.resize(static_cast<size_t>(assign.max_batch()) * model.config().dim);
  return runtime;
}

absl::StatusOr<KvCache*> ShardRuntime::CacheFor(uint64_t sequence_id) {
  if (auto it = caches_.find(sequence_id); it != caches_.end()) return &it->second;
  const int limit = std::max(1, assign_.max_sequences());
  if (static_cast<int>(caches_.size()) >= limit) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("sequence %d: all %d KV caches are in use", sequence_id, limit));
  }
  auto cache = stage_->NewKvCache(assign_.context_length());
  if (!cache.ok()) return cache.status();
  return &caches_.emplace(sequence_id, *std::move(cache)).first->second;
}

absl::Status ShardRuntime::InjectDeviceFault(DeviceFault fault) {
  return ::shardrun::InjectDeviceFault(*backend_, fault);
}

absl::Status ShardRuntime::Step(const wire::Activation& activation,
                                std::span<const uint8_t> hidden_frame) {
  if (stage_ == nullptr) return absl::FailedPreconditionError("this worker holds experts only");
  const int n = activation.n_tokens();
  if (n < 1 || n > stage_->max_batch()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("activation of %d tokens; this shard takes 1..%d", n, stage_->max_batch()));
  }
  auto cache = CacheFor(activation.sequence_id());
  if (!cache.ok()) return cache.status();
  StageInput input;
  if (stage_->slice().embedding) {
    if (activation.tokens_size() != n) {
      return absl::InvalidArgumentError("the first stage needs token ids");
    }
    input.tokens = std::span<const int32_t>(activation.tokens().data(), n);
  } else {
    if (!activation.has_hidden() || activation.hidden().shape_size() != 2 ||
        activation.hidden().shape(1) != dim()) {
      return absl::InvalidArgumentError(absl::StrCat("expected a hidden state of width ", dim()));
    }
    const std::span<float> in(input_.data(), static_cast<size_t>(n) * dim());
    if (absl::Status s = DecodeActivations(activation.hidden().type(), hidden_frame, in); !s.ok()) {
      return s;
    }
    input.hidden = in;
  }
  output_size_ = stage_->OutputSize(n);
  return stage_->Forward(**cache, activation.pos0(), input,
                         std::span<float>(output_.data(), output_size_));
}

}  // namespace shardrun
