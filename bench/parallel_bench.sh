#!/usr/bin/env bash
# Tensor and expert sharding on one host, as markdown tables:
# - a TinyLlama-shaped Q4_0 model: one process with 2 threads vs --type tensor over 2 workers
#   of 1 thread (same total threads), with the time per token spent adding partial sums and the
#   partial-sum bytes each member sends per token, for both reduction paths;
# - a synthetic MoE model: --type expert over 2 and 4 workers, with the share of the expert
#   calls each worker served.
# Tensor runs go through local links (shared memory, the default) and by socket only
# (--no-local-link), alternating.
#   bash bench/parallel_bench.sh            (N=64 tokens; models written under build/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/cli/shardrun
n=${N:-64}
dense=build/bench/tinyllama-q4_0.gguf
moe=build/bench/moe-q8_0.gguf
mkdir -p build/bench
[ -f "$dense" ] || "$bin" synth "$dense" --preset tinyllama --type q4_0 --log-level warn
[ -f "$moe" ] || "$bin" synth "$moe" --preset moe-mini --dim 512 --hidden 1024 --layers 8 \
  --experts 8 --experts-used 2 --type q8_0 --log-level warn
prompt_ids=1$(for i in $(seq 1 15); do printf ',%d' $(( (i * 7919) % 500 )); done)
rate() { grep "^$1:" "$2" | sed -E 's/.* ([0-9.]+) tok\/s.*/\1/'; }
err=$(mktemp)
trap 'rm -f "$err"' EXIT

echo "command: bash bench/parallel_bench.sh (N=$n)"
echo
echo "| $(basename "$dense") | processes x threads | decode tok/s | ratio | partial sums per token: time, bytes sent per member |"
echo "|---|---|---|---|---|"
common=("$dense" --prompt-ids "$prompt_ids" -n "$n" --temp 0 --ignore-eos --log-level warn)
"$bin" generate "${common[@]}" -t 2 2>"$err" >/dev/null
single=$(rate decode "$err")
echo "| single process | 1 x 2 | $single | 1.00 | - |"
path_flags() { if [ "$1" = socket ]; then echo --no-local-link; fi; }
for reduction in all-to-all gather-broadcast; do
  for path in link socket; do
    # shellcheck disable=SC2046
    "$bin" --shards 2 --type tensor --reduction "$reduction" --worker-threads 1 --worker-mem 2G \
      $(path_flags "$path") "${common[@]}" 2>"$err" >/dev/null
    tp=$(rate decode "$err")
    sync=$(grep 'tensor-parallel group' "$err" | sed -E 's/.*\): ([0-9.]+) us\/step adding partial sums, ([0-9]+) bytes.*/\1 us, \2 B/')
    echo "| tensor, 2 workers, $reduction, $path | 2 x 1 | $tp | $(echo "scale=2; $tp / $single" | bc) | $sync |"
  done
done
echo
# The reduction path on a small model, where the hops dominate: decode tok/s, median of 3
# alternating runs of each path.
small=../shared/models/stories260K.bin
echo "| stories260K, decode tok/s (median of 3) | all-to-all | gather-broadcast | partial sums per token (all-to-all / gather-broadcast) |"
echo "|---|---|---|---|"
common=("$small" -z ../shared/models/tok512.bin --prompt-ids 1,403,407 -n 256 --temp 0 --ignore-eos --log-level warn)
median() { sort -n | sed -n 2p; }
for shards in 2 3 4; do for path in link socket; do
  a2a=() gb=() a2a_sync=() gb_sync=()
  for rep in 1 2 3; do
    for reduction in all-to-all gather-broadcast; do
      # shellcheck disable=SC2046
      "$bin" --shards "$shards" --type tensor --reduction "$reduction" --worker-threads 1 \
        $(path_flags "$path") "${common[@]}" 2>"$err" >/dev/null
      sync=$(grep 'tensor-parallel group' "$err" | sed -E 's/.*\): ([0-9.]+) us\/step.*/\1/')
      if [ "$reduction" = all-to-all ]; then a2a+=("$(rate decode "$err")"); a2a_sync+=("$sync")
      else gb+=("$(rate decode "$err")"); gb_sync+=("$sync"); fi
    done
  done
  echo "| $shards workers, $path | $(printf '%s\n' "${a2a[@]}" | median) | $(printf '%s\n' "${gb[@]}" | median) | $(printf '%s\n' "${a2a_sync[@]}" | median) us / $(printf '%s\n' "${gb_sync[@]}" | median) us |"
done; done
echo
echo "| $(basename "$moe") | processes x threads | decode tok/s | expert calls served per worker |"
echo "|---|---|---|---|"
common=("$moe" --prompt-ids "$prompt_ids" -n "$n" --temp 0 --ignore-eos --log-level warn)
"$bin" generate "${common[@]}" -t 1 2>"$err" >/dev/null
echo "| single process | 1 x 1 | $(rate decode "$err") | - |"
for shards in 2 4; do
  "$bin" --shards "$shards" --type expert --worker-threads 1 "${common[@]}" 2>"$err" >/dev/null
  echo "| expert, $shards workers | $shards x 1 | $(rate decode "$err") | $(grep '^expert calls served' "$err" | sed 's/expert calls served: //') |"
done
