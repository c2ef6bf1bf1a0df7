#!/usr/bin/env bash
# Recovery and load balancing, as markdown tables:
# - kill -> next token: a worker SIGKILLs itself (fault injection) mid-answer; the time from its
#   death to the recovered step (detection + re-plan + reload + replay), with and without a
#   spare, on stories260K and a TinyLlama-shaped Q4_0 model; the answer stays identical;
# - one worker throttled (its steps take 3x as long): decode tok/s with and without rebalancing (N=256).
#   bash bench/recovery_bench.sh            (N=64 tokens; models under build/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/cli/shardrun
n=${N:-64}
tiny=build/bench/tinyllama-q4_0.gguf
mkdir -p build/bench
[ -f "$tiny" ] || "$bin" synth "$tiny" --preset tinyllama --type q4_0 --log-level warn
err=$(mktemp)
trap 'rm -f "$err"' EXIT
# Milliseconds since midnight of a log line's [HH:MM:SS.mmm] stamp.
stamp() { sed -E 's/^\[([0-9]+):([0-9]+):([0-9]+)\.([0-9]+)\].*/\1 \2 \3 \4/' |
          awk '{ print ((($1 * 60 + $2) * 60 + $3) * 1000 + $4) }'; }
rate() { grep "^$1:" "$2" | sed -E 's/.* ([0-9.]+) tok\/s.*/\1/'; }

echo "command: bash bench/recovery_bench.sh (N=$n)"
echo
echo "| model | workers | kill -> recovered step | of which re-plan + reload + replay | same answer |"
echo "|---|---|---|---|---|"
for model in stories260K tinyllama; do
  if [ "$model" = stories260K ]; then
    args=(../shared/models/stories260K.bin -z ../shared/models/tok512.bin)
  else
    args=("$tiny" --worker-mem 2G)
  fi
  common=("${args[@]}" --prompt-ids 1,300,301,302 -n "$n" --temp 0 --ignore-eos --emit-ids)
  "$bin" --shards 3 "${common[@]}" 2>"$err" >/dev/null
  want=$(grep generated_ids "$err")
  for spares in 0 1; do
    "$bin" --shards 3 --spares "$spares" --inject w1:kill@step=20 "${common[@]}" 2>"$err" >/dev/null
    killed=$(grep 'injected fault' "$err" | head -1 | stamp)
    recovered=$(grep 'recovered in' "$err" | head -1 | stamp)
    inner=$(grep 'recovered in' "$err" | sed -E 's/.*recovered in ([0-9]+) ms.*/\1 ms/')
    same=$([ "$(grep generated_ids "$err")" = "$want" ] && echo yes || echo NO)
    echo "| $model | 3 + $spares spare | $((recovered - killed)) ms | $inner | $same |"
  done
done
echo
echo "| $(basename "$tiny"), 3 workers, w0 3x slower | decode tok/s | rebalanced |"
echo "|---|---|---|"
common=("$tiny" --worker-mem 2G --prompt-ids 1,300,301,302 -n 256 --temp 0 --ignore-eos)
for mode in --no-rebalance ""; do
  "$bin" --shards 3 --inject w0:slow@x=3 $mode "${common[@]}" 2>"$err" >/dev/null
  echo "| ${mode:-rebalancing on} | $(rate decode "$err") | $(grep -c 'rebalancing:' "$err" || true) |"
  grep 'rebalancing:' "$err" | sed -E 's/.*rebalancing: /  - /' || true
done
