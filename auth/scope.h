// Which parts of a model a token lets its subject hold ("layers=0-11", "experts=0-3,5", or
// both: "layers=0-11;experts=0-3").
//
// A scope has two optional lists. The layer list names the layers whose bodies (attention,
// norms, dense FFN or router) the subject may hold; the expert list names the MoE experts it
// may hold within those layers. So:
//   neither list        the whole model
//   layers only         those layers, with all their experts
//   experts only        those experts in every layer, and no layer bodies (an expert worker)
//   both                those layers, and only those experts within them
// The embedding and the output head follow no list: they come with the first and last stage.
#ifndef SHARDRUN_AUTH_SCOPE_H_
#define SHARDRUN_AUTH_SCOPE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/auth.pb.h"

namespace shardrun::auth {

inline constexpr int kMaxScopeIndex = 1 << 16;  // layers or experts; far beyond any model
inline constexpr size_t kMaxScopeSpans = 64;    // per list

// [begin, end).
struct IndexSpan {
  int begin = 0;
  int end = 0;
  bool operator==(const IndexSpan&) const = default;
};

// A set of indices as sorted, disjoint, non-adjacent spans.
class SpanSet {
 public:
  SpanSet() = default;
  // Sorts and merges `spans`; each must satisfy 0 <= begin < end <= kMaxScopeIndex.
  static absl::StatusOr<SpanSet> Of(std::vector<IndexSpan> spans);

  bool Contains(int index) const;
  bool ContainsAll(int begin, int end) const;  // [begin, end); true when empty
  bool empty() const { return spans_.empty(); }
  const std::vector<IndexSpan>& spans() const { return spans_; }
  SpanSet Below(int limit) const;  // the part inside [0, limit)
  std::string ToString() const;    // inclusive: "0-11,14"
  bool operator==(const SpanSet&) const = default;

 private:
  std::vector<IndexSpan> spans_;
};

class ShardScope {
 public:
  ShardScope() = default;  // the whole model
  ShardScope(std::optional<SpanSet> layers, std::optional<SpanSet> experts)
      : layers_(std::move(layers)), experts_(std::move(experts)) {}

  const std::optional<SpanSet>& layers() const { return layers_; }
  const std::optional<SpanSet>& experts() const { return experts_; }
  bool whole_model() const { return !layers_ && !experts_; }

  bool AllowsLayer(int layer) const;            // the layer's body
  bool AllowsLayers(int begin, int end) const;  // every body in [begin, end)
  bool AllowsExpert(int layer, int expert) const;

  // This scope's part of a model with `n_layers` layers and `n_experts` experts per MoE layer
  // (0: dense). FailedPrecondition "scope holds nothing: ..." when that part is empty, which
  // makes a token useless for the model.
  absl::StatusOr<ShardScope> ClipToModel(int n_layers, int n_experts) const;

  std::string ToString() const;  // ParseScope's syntax; "whole model" without lists
  bool operator==(const ShardScope&) const = default;

 private:
  std::optional<SpanSet> layers_;
  std::optional<SpanSet> experts_;
};

// "layers=0-11", "experts=0-3,5", "layers=0-11;experts=0-3" (inclusive ranges).
absl::StatusOr<ShardScope> ParseScope(std::string_view text);

// The wire form. ScopeFromProto is strict: spans must already be sorted, disjoint,
// non-adjacent and in range, so that one scope has one encoding.
void ScopeToProto(const ShardScope& scope, wire::TokenScope* out);
absl::StatusOr<ShardScope> ScopeFromProto(const wire::TokenScope& proto);

}  // namespace shardrun::auth

#endif  // SHARDRUN_AUTH_SCOPE_H_
