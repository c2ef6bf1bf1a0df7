#!/usr/bin/env bash
# ctest for deploy/netns-cluster.sh: a sharded run across network namespaces equals the single
# process, a failing run and an interrupted run both fail, and no run leaves a namespace or a
# process behind. Exits 77 (ctest SKIP) with the reason when namespaces cannot be made here.
# Usage: tests/netns_cluster_test.sh SHARDRUN_BINARY SHARED_DIR
set -uo pipefail

if (($# != 2)); then
  echo "usage: $0 SHARDRUN_BINARY SHARED_DIR" >&2
  exit 2
fi
binary=$1
shared=$2
script="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/netns-cluster.sh"
args=(--binary "$binary" --model "$shared/models/stories260K.bin"
  --tokenizer "$shared/models/tok512.bin" --timeout 30)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/netns_cluster_test.XXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "TEST FAILURE: $*"
  failures=$((failures + 1))
}

# Every process a run starts inherits this variable (env, ip netns exec and timeout all pass the
# environment on), so /proc/*/environ finds whatever outlived a run, in or out of a namespace,
# without mistaking the workers of other tests that ctest runs in parallel for ours.
marker() { echo "SHARDRUN_NETNS_TEST_RUN=$$-$1"; }

# The namespaces and processes of the run named in $2 (output of the script) tagged $1.
check_left_behind() {
  local tag=$1 output=$2 run left
  run=$(sed -n 's/^run \(shardrun-[0-9a-f]*\):.*/\1/p' <<<"$output")
  if [[ -z $run ]]; then
    fail "$tag: the script did not name its run"
    return
  fi
  left=$(ip netns list | grep -- "$run")
  [[ -z $left ]] || fail "$tag: namespaces left behind: $left"
  left=$(pgrep -af "shardrun worker .*--id $run-w")
  [[ -z $left ]] || fail "$tag: workers left behind: $left"
  left=$(grep -lzx -- "$(marker "$tag")" /proc/[0-9]*/environ 2>/dev/null)
  [[ -z $left ]] || fail "$tag: processes left behind: $left"
}

# 1. A 3-worker run equals the single-process run.
out=$(env "$(marker pass)" "$script" "${args[@]}" --workers 3 2>&1)
rc=$?
echo "$out"
if ((rc == 77)); then
  echo "skipped: $(grep '^SKIP' <<<"$out")"
  exit 77
fi
((rc == 0)) || fail "3-worker run: exit status $rc, expected 0"
grep -q '^PASS: 3 workers (' <<<"$out" || fail "3-worker run: no PASS line"
# Shared memory cannot cross namespaces: every stage heard its predecessor by TCP link (all but
# perhaps a first message sent before the link was up), none by local link.
while IFS= read -r line; do
  [[ $line == *" by TCP link)"* ]] || fail "3-worker run: a stage without TCP link hops: $line"
  [[ $line != *"by local link"* ]] || fail "3-worker run: a local link across namespaces: $line"
done < <(grep '^stage [0-9]* (' <<<"$out")
grep -q '^stage 2 (' <<<"$out" || fail "3-worker run: no stage lines"
check_left_behind pass "$out"

# 2. Workers that cannot hold the model: the plan fails with every process up, and the script
#    must report it (exit 1) and still remove everything.
out=$(env "$(marker plan)" "$script" "${args[@]}" --workers 2 --worker-mem 1K 2>&1)
rc=$?
echo "$out"
((rc == 1)) || fail "1 KiB workers: exit status $rc, expected 1"
grep -q '^FAIL: coordinator failed' <<<"$out" || fail "1 KiB workers: no FAIL line"
check_left_behind plan "$out"

# 3. SIGTERM midway. The last worker's "host" never joins (a wrapper blocks it on a FIFO nobody
#    writes), so the coordinator and the other workers are provably still running when the
#    script is killed; the wrapper reports through a second FIFO once it blocks.
mkfifo "$tmp/never" "$tmp/blocked"
cat >"$tmp/shardrun" <<EOF
#!/usr/bin/env bash
if [[ \$1 == worker && " \$* " == *"-w1 "* ]]; then
  echo blocked >"$tmp/blocked"
  read -r <"$tmp/never"
fi
exec "$(realpath "$binary")" "\$@"
EOF
chmod +x "$tmp/shardrun"
coproc RUN { exec env "$(marker term)" "$script" "${args[@]}" --binary "$tmp/shardrun" \
  --workers 2 2>&1; }
# shellcheck disable=SC2153  # coproc sets RUN_PID
run_pid=$RUN_PID
exec {run_out}<&"${RUN[0]}"
out=
while IFS= read -r -t 30 line <&"$run_out"; do
  out+="$line"$'\n'
  [[ $line == started:* ]] && break
done
if [[ $out != *started:* ]]; then
  fail "interrupted run: never reported its processes started"
elif ! read -r -t 30 _ <>"$tmp/blocked"; then
  fail "interrupted run: the last worker never reached its host"
else
  run=$(sed -n 's/^run \(shardrun-[0-9a-f]*\):.*/\1/p' <<<"$out")
  inside=$(ip netns pids "$run-co"; ip netns pids "$run-w0")
  [[ -n $inside ]] || fail "interrupted run: nothing running in $run-co and $run-w0 before the kill"
  kill -TERM "$run_pid"
  out+=$(cat <&"$run_out")
  wait "$run_pid"
  rc=$?
  echo "$out"
  ((rc == 1)) || fail "interrupted run: exit status $rc, expected 1"
  grep -q '^FAIL: interrupted by SIGTERM' <<<"$out" || fail "interrupted run: no FAIL line"
  for pid in $inside; do
    # A zombie (state Z) has exited; only its reaping is pending.
    state=$(sed 's/.*) //; s/ .*//' "/proc/$pid/stat" 2>/dev/null)
    [[ -z $state || $state == Z ]] ||
      fail "interrupted run: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline")) outlived the run"
  done
  check_left_behind term "$out"
fi
exec {run_out}<&-

# 4. Without root the script declines with 77 and a reason.
if command -v setpriv >/dev/null; then
  out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$script" "${args[@]}" 2>&1)
  rc=$?
  echo "$out"
  ((rc == 77)) || fail "as uid 65534: exit status $rc, expected 77"
  grep -q '^SKIP: network namespaces need root' <<<"$out" || fail "as uid 65534: no SKIP reason"
fi

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "all netns cluster checks passed"
