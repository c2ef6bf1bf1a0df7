#!/usr/bin/env bash
# Single process vs layer shards on one host: decode tokens/s by shard count, polling mode and
# path (link: shared memory, proto/local_link.h; tcp: --links tcp, a TCP link per sender as
# between hosts, proto/tcp_link.h; socket: --links none, ZeroMQ only), the transport share of a
# step and the hop latency, as a markdown table; the medians also go to bench/shard_results.tsv
# and bench/speed_vs_shards.svg (bench/plot_shards.py) unless SHARDS picks a partial sweep.
#   bash bench/shard_bench.sh [MODEL]
#   env: N tokens = 64, ROUNDS = 3, MAX_SHARDS = 4 (or SHARDS = "2 4"), POLLS = "block spin",
#        PATHS = "link tcp socket"
# MODEL defaults to a TinyLlama-shaped Q4_0 file written by `shardrun synth` under build/bench.
# Runs alternate (single, 1..MAX_SHARDS shards x polls x paths) so that drift hits all alike.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/cli/shardrun
model=${1:-build/bench/tinyllama-q4_0.gguf}
n=${N:-64}
rounds=${ROUNDS:-3}
max_shards=${MAX_SHARDS:-4}
polls=${POLLS:-block spin}
paths=${PATHS:-link tcp socket}
shard_counts=${SHARDS:-$(seq 1 "$max_shards")}
if [ ! -f "$model" ]; then
  mkdir -p "$(dirname "$model")"
  "$bin" synth "$model" --preset tinyllama --type q4_0 --log-level warn
fi
prompt_ids=1$(for i in $(seq 1 63); do printf ',%d' $(( (i * 7919) % 32000 )); done)
common=("$model" --prompt-ids "$prompt_ids" -n "$n" --temp 0 --ignore-eos --log-level warn)
raw=$(mktemp)
err=$(mktemp)
trap 'rm -f "$raw" "$err"' EXIT

rate() { grep "^$1:" "$err" | sed -E 's/.* ([0-9.]+) tok\/s.*/\1/'; }
for round in $(seq 1 "$rounds"); do
  "$bin" generate "${common[@]}" -t 1 2>"$err" >/dev/null
  printf 'single\t1\t-\t%s\t-\t-\t-\n' "$(rate decode)" >>"$raw"
  for shards in $shard_counts; do
    for poll in $polls; do for path in $paths; do
      case $path in
        link) flags=(--links auto) ;;
        tcp) flags=(--links tcp) ;;
        socket) flags=(--links none) ;;
        *) echo "unknown path $path (link, tcp, socket)" >&2; exit 2 ;;
      esac
      "$bin" --shards "$shards" --type layer --worker-threads 1 --worker-mem 2G --poll "$poll" \
        "${flags[@]}" "${common[@]}" 2>"$err" >/dev/null
      transport=$(grep '^decode step:' "$err" | sed -E 's/.*compute \+ ([0-9.]+) us transport.*/\1/')
      # The median over stages of each stage's p50 / p99 hop in; the hop back to the coordinator.
      hop50=$(grep -E '^stage [0-9]+ ' "$err" | sed -E 's/.*hop in: p50 ([0-9]+) us.*/\1/' | sort -n |
        awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
      hop99=$(grep -E '^stage [0-9]+ ' "$err" | sed -E 's/.*p99 ([0-9]+) us.*/\1/' | sort -n |
        awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
      back=$(grep '^hop back' "$err" | sed -E 's/.*p50 ([0-9]+) us.*/\1/')
      printf 'shards\t%s\t%s\t%s\t%s\t%s/%s\t%s\n' "$shards" "$poll+$path" "$(rate decode)" \
        "$transport" "$hop50" "$hop99" "$back" >>"$raw"
    done; done
  done
done

# Medians per configuration.
python3 - "$raw" "$model" "$n" "$rounds" "${SHARDS:-}" <<'PY'
import statistics, sys
raw, model, n, rounds, partial = sys.argv[1:]
rows = {}
for line in open(raw):
    kind, shards, poll, decode, transport, hops, back = line.rstrip("\n").split("\t")
    rows.setdefault((kind, int(shards), poll), []).append((float(decode), transport, hops, back))
single = statistics.median(r[0] for r in rows[("single", 1, "-")])
print(f"command: bash bench/shard_bench.sh {model} (N={n}, ROUNDS={rounds}"
      f"{', SHARDS=' + partial if partial else ''}; medians)\n")
print("| run | poll + path | decode tok/s | vs single 1 x 1 | transport + waiting per token | "
      "stage hop in p50/p99 (median stage) | hop back p50 |")
print("|---|---|---|---|---|---|---|")
print(f"| single process 1 x 1 | - | {single:.2f} | 1.00x | - | - | - |")
with open("/dev/null" if partial else "bench/shard_results.tsv", "w") as out:
    out.write("shards\tpoll\tdecode\tsingle\n")
    for (kind, shards, poll), rs in sorted(rows.items()):
        if kind != "shards":
            continue
        decode = statistics.median(r[0] for r in rs)
        mid = sorted(rs)[len(rs) // 2]
        print(f"| {shards} layer shard{'s' if shards > 1 else ''} x 1 thread | {poll} | "
              f"{decode:.2f} | {decode / single:.2f}x | {mid[1]} us | {mid[2]} us | {mid[3]} us |")
        out.write(f"{shards}\t{poll}\t{decode:.2f}\t{single:.2f}\n")
PY
[ -n "${SHARDS:-}" ] && exit 0  # a partial sweep leaves the plot of the last full one
python3 bench/plot_shards.py bench/shard_results.tsv bench/speed_vs_shards.svg \
  --title "Layer shards on one 2-vCPU host, $(basename "$model"), 1 thread each"
