// The model as a chain of worker processes, seen by the generation loop as one LogitsSource.
#ifndef SHARDRUN_COORDINATOR_REMOTE_MODEL_H_
#define SHARDRUN_COORDINATOR_REMOTE_MODEL_H_

#include "coordinator/coordinator.h"
#include "engine/logits_source.h"

namespace shardrun {

class RemoteModel : public LogitsSource {
 public:
  // One sequence through the deployed plan of `coordinator`.
  RemoteModel(Coordinator& coordinator, uint64_t sequence_id)
      : coordinator_(coordinator), sequence_id_(sequence_id) {}
  ~RemoteModel() override { coordinator_.EndSequence(sequence_id_); }

  absl::Status Compute(int pos0, std::span<const int32_t> tokens,
                       std::span<float> logits) override {
    return coordinator_.Forward(sequence_id_, pos0, tokens, logits);
  }
  int max_batch() const override { return coordinator_.options().max_batch; }
  int context_length() const override { return coordinator_.context_length(); }
  int vocab_size() const override { return coordinator_.model().config().vocab_size; }

 private:
  Coordinator& coordinator_;
  uint64_t sequence_id_;
};

}  // namespace shardrun

#endif  // SHARDRUN_COORDINATOR_REMOTE_MODEL_H_
