#!/usr/bin/env bash
# A multi-host sharded run on one machine: every process gets its own network namespace (its own
# "host" with its own address), joined by a bridge that lives in a separate "switch" namespace, so
# the coordinator and the workers talk over real TCP between distinct addresses, exactly as on
# separate machines, without touching the root namespace's networking.
#
#   10.77.0.1         coordinator   shardrun coordinator --listen tcp://0.0.0.0:5555 --shards N
#   10.77.0.(10+i)    worker i      shardrun worker --connect tcp://10.77.0.1:5555 --advertise ...
#
# The greedy generation's ids must equal a single-process `shardrun generate` run (outside the
# namespaces) of the same arguments. Everything (processes, links, namespaces) is torn down on
# exit, on failure and on INT/TERM alike.
#
# Usage (as root): deploy/netns-cluster.sh [--workers N] [--model PATH] [--tokenizer PATH]
#                    [--binary PATH] [--worker-mem SIZE] [--timeout S] [--keep]
# Exit status: 0 PASS, 1 FAIL (mismatch, a process failed, interrupted), 2 bad usage,
#              77 cannot run here (not root, no `ip netns`, no veth/bridge support, no model).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
workers=3
model="$repo/../shared/models/stories260K.bin"
tokenizer="$repo/../shared/models/tok512.bin"
binary="$repo/build/cli/shardrun"
worker_mem=2G
limit_s=60  # no single process may run longer than this
keep=0
prompt="Once upon a time"
n_predict=64
readonly subnet=10.77.0 port=5555

usage() {
  cat <<EOF
Usage: $0 [options]        (as root)
  --workers N        worker namespaces, 1..240 (default $workers)
  --model PATH       model file (default ../shared/models/stories260K.bin)
  --tokenizer PATH   llama2.c tokenizer (default ../shared/models/tok512.bin; '' for a GGUF
                     model that carries its own vocabulary)
  --binary PATH      shardrun executable (default build/cli/shardrun)
  --worker-mem SIZE  memory budget each worker announces (default $worker_mem)
  --timeout S        longest any one process may run, seconds (default $limit_s)
  --keep             keep the log directory (namespaces and processes are always removed)
Exit status: 0 pass, 1 fail, 2 bad usage, 77 cannot run here.
EOF
}

while (($#)); do
  case $1 in
    --workers | --model | --tokenizer | --binary | --worker-mem | --timeout)
      if (($# < 2)); then
        echo "$1 needs a value" >&2
        exit 2
      fi
      case $1 in
        --workers) workers=$2 ;;
        --model) model=$2 ;;
        --tokenizer) tokenizer=$2 ;;
        --binary) binary=$2 ;;
        --worker-mem) worker_mem=$2 ;;
        --timeout) limit_s=$2 ;;
      esac
      shift 2
      ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
if ! [[ $workers =~ ^[0-9]+$ ]] || ((workers < 1 || workers > 240)); then
  echo "--workers: expected 1..240 (one address each in $subnet.0/24), got '$workers'" >&2
  exit 2
fi
if ! [[ $limit_s =~ ^[0-9]+$ ]] || ((limit_s < 1)); then
  echo "--timeout: expected a positive number of seconds, got '$limit_s'" >&2
  exit 2
fi

skip() {
  echo "SKIP: $*"
  exit 77
}

# Can this machine run it at all? Each reason is a property of the environment, not a bug.
(($(id -u) == 0)) || skip "network namespaces need root (running as uid $(id -u))"
command -v ip >/dev/null || skip "the ip command (iproute2) is not installed"
command -v timeout >/dev/null || skip "the timeout command (coreutils) is not installed"
err=$(ip netns list 2>&1 >/dev/null) || skip "ip netns is unavailable: $err"
[[ -r $model ]] || skip "model not found: $model"
[[ -z $tokenizer || -r $tokenizer ]] || skip "tokenizer not found: $tokenizer"
if [[ ! -x $binary ]]; then
  echo "FAIL: shardrun binary not found or not executable: $binary (build target shardrun)"
  exit 1
fi
# Absolute paths, so that every log line and failure report names exactly the files used.
model=$(realpath "$model")
[[ -z $tokenizer ]] || tokenizer=$(realpath "$tokenizer")
binary=$(realpath "$binary")

# A random suffix keeps parallel runs apart: namespace names are global to the machine, while
# addresses and interface names only need to be unique inside one run's own namespaces.
run="shardrun-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
switch_ns="$run-sw"
coord_ns="$run-co"
worker_ns=()
for ((i = 0; i < workers; i++)); do worker_ns+=("$run-w$i"); done

logs=$(mktemp -d "${TMPDIR:-/tmp}/$run.XXXX")
created_ns=()   # namespaces to delete, in creation order
children=()     # our direct children: the `timeout` wrappers (each forwards signals to shardrun)
torn_down=0

# Every process inside this run's namespaces, one pid a line.
# shellcheck disable=SC2317
ns_pids() {
  local ns
  for ns in "${created_ns[@]}"; do ip netns pids "$ns" 2>/dev/null; done
}

# Runs from the EXIT trap (shellcheck cannot see trap calls, hence SC2317).
# shellcheck disable=SC2317
teardown() {
  local rc=$?
  ((torn_down)) && return
  torn_down=1
  trap '' INT TERM  # a second Ctrl-C must not leave half the run behind
  local pid ns i stray
  # timeout forwards TERM to its shardrun and, with -k, follows with KILL after 2 s, so waiting on
  # the wrappers is bounded and means the processes are gone.
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${children[@]}"; do wait "$pid" 2>/dev/null; done
  # Anything else still inside our namespaces (nothing, normally) is killed outright.
  mapfile -t stray < <(ns_pids)
  if ((${#stray[@]})); then
    echo "killing stray processes in $run namespaces: ${stray[*]}" >&2
    kill -KILL "${stray[@]}" 2>/dev/null
    for ((i = 0; i < 100; i++)); do  # bounded: KILL takes effect within milliseconds
      [[ -n $(ns_pids) ]] || break
      sleep 0.02
    done
  fi
  # Links first (deleting one end of a veth pair deletes both), then the namespaces.
  if [[ " ${created_ns[*]} " == *" $switch_ns "* ]]; then
    for ns in "$coord_ns" "${worker_ns[@]}"; do
      ip -n "$switch_ns" link del "p-${ns##*-}" 2>/dev/null
    done
    ip -n "$switch_ns" link del br0 2>/dev/null
  fi
  for ns in "${created_ns[@]}"; do
    ip netns del "$ns" || echo "could not delete namespace $ns" >&2
  done
  if ((keep)); then
    echo "logs kept in $logs"
  else
    rm -rf "$logs"
  fi
  exit "$rc"
}
# shellcheck disable=SC2317
on_signal() {
  echo "FAIL: interrupted by SIG$1; tearing down $run"
  exit 1
}
trap teardown EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

fail() {
  echo "FAIL: $*"
  exit 1
}

# Runs an `ip` command; a failure is fatal. Used for steps that only fail on a bug here.
net() {
  local out
  out=$(ip "$@" 2>&1) || fail "ip $*: $out"
}

# Creates a namespace with its loopback up; a failure on the very first one means the kernel or
# the container does not allow namespaces here, which is a skip rather than a failure.
add_ns() {
  local out
  if ! out=$(ip netns add "$1" 2>&1); then
    ((${#created_ns[@]})) && fail "ip netns add $1: $out"
    skip "cannot create a network namespace: $out"
  fi
  created_ns+=("$1")
  net -n "$1" link set lo up
}

# Joins namespace $1 to the bridge with address $2: the veth's switch end is named p-<role>.
attach() {
  local ns=$1 address=$2 port_name="p-${1##*-}" out
  if ! out=$(ip -n "$switch_ns" link add "$port_name" type veth peer name eth0 netns "$ns" 2>&1)
  then
    skip "cannot create a veth pair (no veth support?): $out"
  fi
  net -n "$switch_ns" link set "$port_name" master br0 up
  net -n "$ns" addr add "$address/24" dev eth0
  net -n "$ns" link set eth0 up
}

echo "run $run: coordinator $subnet.1, $workers workers $subnet.10..$subnet.$((9 + workers))"

# The single-process reference runs outside the namespaces, concurrently with the network setup.
gen_args=("$model" -p "$prompt" -n "$n_predict" --temp 0 --emit-ids)
[[ -z $tokenizer ]] || gen_args+=(-z "$tokenizer")
timeout -k 2 "$limit_s" "$binary" generate "${gen_args[@]}" -t 1 \
  >"$logs/reference.out" 2>"$logs/reference.err" &
reference_pid=$!
children+=("$reference_pid")

add_ns "$switch_ns"
out=$(ip -n "$switch_ns" link add br0 type bridge 2>&1) ||
  skip "cannot create a bridge (no bridge support?): $out"
net -n "$switch_ns" link set br0 type bridge forward_delay 0
net -n "$switch_ns" link set br0 up
add_ns "$coord_ns"
attach "$coord_ns" "$subnet.1"
for ((i = 0; i < workers; i++)); do
  add_ns "${worker_ns[i]}"
  attach "${worker_ns[i]}" "$subnet.$((10 + i))"
done

# Coordinator and workers start together: workers resend their hello until the coordinator
# answers, so nobody has to wait for anybody's "listening" line.
ip netns exec "$coord_ns" timeout -k 2 "$limit_s" "$binary" coordinator \
  --listen "tcp://0.0.0.0:$port" --insecure --shards "$workers" "${gen_args[@]}" \
  --register-timeout "$((limit_s < 15 ? limit_s : 15))" \
  >"$logs/coordinator.out" 2>"$logs/coordinator.err" &
coord_pid=$!
children+=("$coord_pid")
declare -A role=([$coord_pid]=coordinator [$reference_pid]=reference)
for ((i = 0; i < workers; i++)); do
  ip netns exec "${worker_ns[i]}" timeout -k 2 "$limit_s" "$binary" worker \
    --connect "tcp://$subnet.1:$port" --advertise "$subnet.$((10 + i))" --insecure --id "$run-w$i" \
    --mem "$worker_mem" --threads 1 --model "$model" \
    >"$logs/w$i.out" 2>"$logs/w$i.err" &
  children+=("$!")
  role[$!]="w$i"
done
echo "started: coordinator and $workers workers in namespaces $run-{co,w0..w$((workers - 1))}"

# Log tails for a failure report.
show() {
  local f
  for f in "$@"; do
    [[ -s $logs/$f ]] || continue
    echo "--- $f (last lines)"
    tail -n 15 "$logs/$f"
  done
}

describe_rc() {
  case $1 in
    124 | 137) echo "ran longer than ${limit_s}s (rc $1)" ;;
    *) echo "exit status $1" ;;
  esac
}

# Wait for every process to end, reacting as soon as one fails: a dead worker would otherwise
# leave the coordinator waiting out its registration timeout, and a failed coordinator would
# leave the workers waiting out theirs.
pending=("${children[@]}")
while ((${#pending[@]})); do
  done_pid=
  wait -n -p done_pid "${pending[@]}"
  rc=$?
  [[ -n $done_pid ]] || fail "wait returned $rc without naming a process (pending: ${pending[*]})"
  remaining=()
  for pid in "${pending[@]}"; do [[ $pid == "$done_pid" ]] || remaining+=("$pid"); done
  pending=("${remaining[@]}")
  if ((rc != 0)); then
    who=${role[$done_pid]}
    # A worker's or the reference's own log, and the coordinator's view of the run.
    if [[ $who == coordinator ]]; then show coordinator.err; else show "$who.err" coordinator.err; fi
    fail "$who failed: $(describe_rc "$rc")"
  fi
done

ids_of() { sed -n 's/^generated_ids: //p' "$logs/$1"; }
want=$(ids_of reference.err)
got=$(ids_of coordinator.err)
[[ -n $want ]] || { show reference.err; fail "the single-process run printed no generated_ids"; }
[[ -n $got ]] || { show coordinator.err; fail "the cluster run printed no generated_ids"; }
registered=$(grep -c "worker $run-w[0-9]* registered" "$logs/coordinator.err")
stages=$(grep -c '^stage [0-9]* (' "$logs/coordinator.err")
if ((registered != workers)); then
  show coordinator.err
  fail "expected $workers workers to register, saw $registered"
fi
# The planner may leave a worker spare (another stage would only add a hop), but a one-stage plan
# with several workers would never send an activation from one worker namespace to another.
if ((stages < 1 || stages > workers || (workers > 1 && stages < 2))); then
  show coordinator.err
  fail "the plan ran $stages stages on $workers workers; the run must cross worker namespaces"
fi
if [[ $got != "$want" ]]; then
  echo "single process: $want"
  echo "cluster:        $got"
  fail "the cluster generated different ids than the single process"
fi
if ! cmp -s "$logs/reference.out" "$logs/coordinator.out"; then
  diff "$logs/reference.out" "$logs/coordinator.out" | head -n 10
  fail "same ids but different text on stdout"
fi
n_ids=$(tr ',' '\n' <<<"$got" | wc -l)
# How the hops went between the namespaces (by TCP link unless a run said --links none).
grep -E '^(stage [0-9]+ \(|hop back)' "$logs/coordinator.err"
echo "PASS: $workers workers ($stages stages) in separate network namespaces generated the same" \
  "$n_ids ids as a single process"
exit 0
