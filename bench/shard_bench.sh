#!/usr/bin/env bash
# Single process vs layer shards on one host: prefill and decode tokens/s, compute per token,
# bytes per token, as a markdown table.
#   bash bench/shard_bench.sh [MODEL] [-n TOKENS]
# MODEL defaults to a TinyLlama-shaped Q4_0 file written by `shardrun synth` under build/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/cli/shardrun
model=${1:-build/bench/tinyllama-q4_0.gguf}
n=${N:-64}
if [ ! -f "$model" ]; then
  mkdir -p "$(dirname "$model")"
  "$bin" synth "$model" --preset tinyllama --type q4_0 --log-level warn
fi
prompt_ids=1$(for i in $(seq 1 63); do printf ',%d' $(( (i * 7919) % 32000 )); done)
common=("$model" --prompt-ids "$prompt_ids" -n "$n" --temp 0 --ignore-eos --log-level warn)

rate() { grep "^$1:" | sed -E 's/.* ([0-9.]+) tok\/s.*/\1/'; }

echo "command: bash bench/shard_bench.sh $model (N=$n)"
echo
echo "| run | processes x threads | prefill tok/s | decode tok/s | decode step: compute + transport | bytes per token per hop | hop latency (stage 1 in) |"
echo "|---|---|---|---|---|---|---|"
err=$(mktemp)
for threads in 1 2; do
  "$bin" generate "${common[@]}" -t "$threads" 2>"$err" >/dev/null
  echo "| single process | 1 x $threads | $(rate prefill <"$err") | $(rate decode <"$err") | - | - | - |"
done
for shards in 2 4; do
  "$bin" --shards "$shards" --type layer --worker-threads 1 --worker-mem 2G "${common[@]}" \
    2>"$err" >/dev/null
  compute=$(grep '^decode step:' "$err" | sed -E 's/decode step: [0-9.]+ us = ([0-9.]+) us compute \+ ([0-9.]+) us.*/\1 + \2 us/')
  hop=$(grep -E '^stage 1 ' "$err" | sed -E 's/.*hop in: //')
  bytes=$(grep '^activations:' "$err" | sed -E 's/activations: ([0-9]+) bytes.*/\1/')
  echo "| $shards layer shards | $shards x 1 | $(rate prefill <"$err") | $(rate decode <"$err") | $compute | $bytes | $hop |"
done
rm -f "$err"
