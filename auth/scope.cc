#include "auth/scope.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "auth/string_views.h"

namespace shardrun::auth {
namespace {

absl::Status CheckSpan(const IndexSpan& s) {
  if (s.begin < 0 || s.begin >= s.end || s.end > kMaxScopeIndex) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scope span [", s.begin, ", ", s.end, ") is empty or outside 0..", kMaxScopeIndex - 1));
  }
  return absl::OkStatus();
}

// "0-11,14" (inclusive) into spans.
absl::StatusOr<std::vector<IndexSpan>> ParseSpanList(std::string_view list) {
  std::vector<IndexSpan> spans;
  for (absl::string_view item : absl::StrSplit(ToAbsl(list), ',')) {
    auto bad = [&](std::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("scope item \"", std::string(item), "\": ", std::string(why)));
    };
    if (spans.size() == kMaxScopeSpans) {
      return absl::InvalidArgumentError(
          absl::StrCat("a scope list holds at most ", kMaxScopeSpans, " ranges"));
    }
    std::vector<absl::string_view> ends = absl::StrSplit(item, '-');
    int first = 0, last = 0;
    // SimpleAtoi takes signs and spaces; scope numbers are plain digits.
    auto digits = [](absl::string_view s) {
      return !s.empty() && s.size() <= 6 &&
             std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (ends.size() > 2 || !digits(ends[0]) || !digits(ends.back()) ||
        !absl::SimpleAtoi(ends[0], &first) || !absl::SimpleAtoi(ends.back(), &last)) {
      return bad("expected N or N-M");
    }
    if (last < first) return bad("the range ends before it begins");
    if (last >= kMaxScopeIndex) return bad(absl::StrCat("beyond ", kMaxScopeIndex - 1));
    spans.push_back({first, last + 1});
  }
  return spans;
}

void SpansToProto(const SpanSet& set, wire::ScopeSpans* out) {
  out->Clear();
  for (const IndexSpan& s : set.spans()) {
    auto* p = out->add_spans();
    p->set_begin(s.begin);
    p->set_end(s.end);
  }
}

absl::StatusOr<SpanSet> SpansFromProto(const wire::ScopeSpans& list, std::string_view what) {
  if (static_cast<size_t>(list.spans_size()) > kMaxScopeSpans) {
    return absl::InvalidArgumentError(
        absl::StrCat("scope ", std::string(what), ": more than ", kMaxScopeSpans, " spans"));
  }
  std::vector<IndexSpan> spans;
  for (const auto& p : list.spans()) {
    const IndexSpan s{p.begin(), p.end()};
    if (absl::Status st = CheckSpan(s); !st.ok()) return st;
    if (!spans.empty() && s.begin <= spans.back().end) {
      return absl::InvalidArgumentError(
          absl::StrCat("scope ", std::string(what), ": spans not sorted, overlapping or adjacent"));
    }
    spans.push_back(s);
  }
  if (spans.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("scope ", std::string(what), ": empty list"));
  }
  return SpanSet::Of(std::move(spans));
}

}  // namespace

absl::StatusOr<SpanSet> SpanSet::Of(std::vector<IndexSpan> spans) {
  for (const IndexSpan& s : spans) {
    if (absl::Status st = CheckSpan(s); !st.ok()) return st;
  }
  std::sort(spans.begin(), spans.end(),
            [](const IndexSpan& a, const IndexSpan& b) { return a.begin < b.begin; });
  SpanSet set;
  for (const IndexSpan& s : spans) {
    if (!set.spans_.empty() && s.begin <= set.spans_.back().end) {
      set.spans_.back().end = std::max(set.spans_.back().end, s.end);
    } else {
      set.spans_.push_back(s);
    }
  }
  return set;
}

bool SpanSet::Contains(int index) const { return ContainsAll(index, index + 1); }

bool SpanSet::ContainsAll(int begin, int end) const {
  if (begin >= end) return true;
  // Spans are disjoint and non-adjacent, so [begin, end) must lie inside a single one.
  auto it = std::upper_bound(spans_.begin(), spans_.end(), begin,
                             [](int value, const IndexSpan& s) { return value < s.begin; });
  if (it == spans_.begin()) return false;
  --it;
  return begin >= it->begin && end <= it->end;
}

SpanSet SpanSet::Below(int limit) const {
  SpanSet out;
  for (const IndexSpan& s : spans_) {
    if (s.begin >= limit) break;
    out.spans_.push_back({s.begin, std::min(s.end, limit)});
  }
  return out;
}

std::string SpanSet::ToString() const {
  return absl::StrJoin(spans_, ",", [](std::string* out, const IndexSpan& s) {
    if (s.end - s.begin == 1) {
      absl::StrAppend(out, s.begin);
    } else {
      absl::StrAppend(out, s.begin, "-", s.end - 1);
    }
  });
}

bool ShardScope::AllowsLayer(int layer) const {
  if (layers_) return layers_->Contains(layer);
  return !experts_;  // an experts-only scope holds no layer bodies
}

bool ShardScope::AllowsLayers(int begin, int end) const {
  if (begin >= end) return true;
  if (layers_) return layers_->ContainsAll(begin, end);
  return !experts_;
}

bool ShardScope::AllowsExpert(int layer, int expert) const {
  if (layers_ && !layers_->Contains(layer)) return false;
  return !experts_ || experts_->Contains(expert);
}

absl::StatusOr<ShardScope> ShardScope::ClipToModel(int n_layers, int n_experts) const {
  if (n_layers <= 0) {
    return absl::FailedPreconditionError("scope holds nothing: the model has no layers");
  }
  std::optional<SpanSet> layers, experts;
  if (layers_) layers = layers_->Below(n_layers);
  if (experts_) experts = experts_->Below(n_experts);
  const bool any_layer = layers ? !layers->empty() : !experts;
  const bool any_expert =
      n_experts > 0 && (!layers || !layers->empty()) && (!experts || !experts->empty());
  if (any_layer || any_expert) return ShardScope(std::move(layers), std::move(experts));

  std::string why;
  if (layers && layers->empty()) {
    why = absl::StrCat("layers=", layers_->ToString(), " lie outside the model's ", n_layers,
                       " layers");
  } else if (n_experts == 0) {
    why = absl::StrCat("experts=", experts_->ToString(), " only, and the model has no experts");
  } else {
    why = absl::StrCat("experts=", experts_->ToString(), " lie outside the model's ", n_experts,
                       " experts");
  }
  return absl::FailedPreconditionError(absl::StrCat("scope holds nothing: ", why));
}

std::string ShardScope::ToString() const {
  if (whole_model()) return "whole model";
  std::string out;
  if (layers_) absl::StrAppend(&out, "layers=", layers_->ToString());
  if (experts_) absl::StrAppend(&out, layers_ ? ";" : "", "experts=", experts_->ToString());
  return out;
}

absl::StatusOr<ShardScope> ParseScope(std::string_view text) {
  std::optional<SpanSet> layers, experts;
  if (text.empty()) return absl::InvalidArgumentError("empty scope");
  for (absl::string_view clause : absl::StrSplit(ToAbsl(text), ';')) {
    const size_t eq = clause.find('=');
    const absl::string_view name = clause.substr(0, eq);
    std::optional<SpanSet>* target = nullptr;
    if (name == "layers") target = &layers;
    if (name == "experts") target = &experts;
    if (eq == absl::string_view::npos || target == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("scope clause \"", std::string(clause),
                                                     "\": expected layers=... or experts=..."));
    }
    if (target->has_value()) {
      return absl::InvalidArgumentError(absl::StrCat("scope names ", std::string(name), " twice"));
    }
    absl::StatusOr<std::vector<IndexSpan>> spans = ParseSpanList(ToStd(clause.substr(eq + 1)));
    if (!spans.ok()) return spans.status();
    absl::StatusOr<SpanSet> set = SpanSet::Of(std::move(*spans));
    if (!set.ok()) return set.status();
    *target = std::move(*set);
  }
  return ShardScope(std::move(layers), std::move(experts));
}

void ScopeToProto(const ShardScope& scope, wire::TokenScope* out) {
  out->Clear();
  if (scope.layers()) SpansToProto(*scope.layers(), out->mutable_layers());
  if (scope.experts()) SpansToProto(*scope.experts(), out->mutable_experts());
}

absl::StatusOr<ShardScope> ScopeFromProto(const wire::TokenScope& proto) {
  std::optional<SpanSet> layers, experts;
  if (proto.has_layers()) {
    absl::StatusOr<SpanSet> set = SpansFromProto(proto.layers(), "layers");
    if (!set.ok()) return set.status();
    layers = std::move(*set);
  }
  if (proto.has_experts()) {
    absl::StatusOr<SpanSet> set = SpansFromProto(proto.experts(), "experts");
    if (!set.ok()) return set.status();
    experts = std::move(*set);
  }
  return ShardScope(std::move(layers), std::move(experts));
}

}  // namespace shardrun::auth
