#!/usr/bin/env python3
"""Single-process speed of shardrun against llama.cpp on the same files, in one invocation.

    python3 bench/compare_llamacpp.py MODEL.gguf [MODEL.gguf ...] [--threads 1,2]
        [--prompt 128] [--gen 64] [--rounds 3] [--build build] [--llamacpp DIR] [--kv f16]
        [--baseline OLD_ENGINE_BENCH] [--priority N] [--wait-idle S] [--tsv-out FILE]

Prints, as a markdown table: the read-bandwidth ceiling (bench/bandwidth_probe), then per
model and thread count the prefill and decode tokens/s of shardrun (bench/engine_bench) and of
llama.cpp (the runner in ../shared/tools/llamacpp-ref, installed with npm), their ratio, the
rate at which shardrun's decode reads the weights and its share of the ceiling. With
--baseline (the engine_bench of an earlier build) that build joins the rotation and a second
table compares the two builds.

The machines this runs on are shared and noisy, so the two engines run alternately, one run
each per round (the first of the pair swapping every round), and the table shows the median
of the rounds: a burst of load from elsewhere then hits both sides alike. Before each run it
also waits (up to --wait-idle seconds) until other processes use less than a quarter of a
core; the rows whose runs had to start without that are marked "busy". With --priority N
(Linux, root) it runs in a session of its own whose scheduling group gets nice value N:
the kernel shares the CPU between sessions first (autogroups), so on a machine where others'
builds run in their sessions a 2-thread benchmark otherwise gets about one core's worth, its
threads often on one core; both engines run in that session alike. When the llama.cpp
runner is not there (no node, or npm install not done) its columns say so and the rest runs.
Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average():
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "?"


def own_session(priority):
    """Re-runs this script in a new session whose autogroup has nice value `priority`."""
    if os.getsid(0) != os.getpid():
        os.execvp("setsid", ["setsid", "--wait", sys.executable] + sys.argv)
    with open("/proc/self/autogroup", "w") as f:
        f.write(str(priority))


def busy_cores(seconds=0.5):
    """CPU time used by all processes over `seconds`, in cores (from /proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    if total1 == total0:
        return 0.0
    return (1 - (idle1 - idle0) / (total1 - total0)) * os.cpu_count()


def wait_idle(limit):
    """Waits until the machine is idle, up to `limit` seconds; whether it got there."""
    deadline = time.monotonic() + limit
    while True:
        if busy_cores() < 0.25:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def llamacpp_runner(path):
    """The runner's script, or None with the reason it cannot run."""
    script = os.path.join(path, "llamacpp_ref.mjs")
    if not os.path.isfile(script):
        return None, "no %s" % script
    if shutil.which("node") is None:
        return None, "node is not installed"
    if not os.path.isdir(os.path.join(path, "node_modules", "node-llama-cpp")):
        return None, "npm install not done in %s (see its README)" % path
    return script, None


def ours(engine_bench, model, threads, prompt, gen):
    out = run([engine_bench, model, "--threads", str(threads),
               "--prompt", str(prompt), "--gen", str(gen), "--repeat", "1", "--tsv"]).stdout
    fields = out.strip().splitlines()[-1].split("\t")
    return {"type": fields[1], "prefill": float(fields[3]), "decode": float(fields[4]),
            "bytes": int(fields[5])}


def llama(script, model, threads, prompt_ids, gen, kv):
    out = run(["node", script, model, "--prompt-ids", ",".join(map(str, prompt_ids)),
               "--n", str(gen + 1), "--threads", str(threads), "--kv", kv, "--warmup",
               "--repeat", "1", "--json", "--quiet"], cwd=os.path.dirname(script)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    release = result.get("llama_cpp") or {}
    return {"prefill": result["prefill"]["tok_s"], "decode": result["decode"]["tok_s"],
            "release": "%s %s" % (release.get("repo", "llama.cpp"), release.get("release", "?"))}


def fmt(v, digits=1):
    return "-" if v is None else "%.*f" % (digits, v)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens (one batch)")
    p.add_argument("--gen", type=int, default=64, help="decode steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--llamacpp", default=os.path.join(ROOT, "..", "shared", "tools",
                                                      "llamacpp-ref"))
    p.add_argument("--kv", default="f16", help="llama.cpp KV cache type (its default: f16)")
    p.add_argument("--wait-idle", type=float, default=60,
                   help="seconds to wait for an idle machine before each run")
    p.add_argument("--baseline", help="engine_bench binary of an earlier build to compare with")
    p.add_argument("--priority", type=int,
                   help="run in a new session with this autogroup nice value (-20..19)")
    p.add_argument("--tsv-out", help="also write the rows here (for bench/plot_speed.py)")
    args = p.parse_args()
    if args.priority is not None:
        own_session(args.priority)
    threads = [int(t) for t in args.threads.split(",")]

    print("command: python3 bench/compare_llamacpp.py " + " ".join(sys.argv[1:]))
    print("date: %s, %s, %d CPUs, load average before: %s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), cpu_model(), os.cpu_count(),
        load_average()))
    if args.priority is not None:
        with open("/proc/self/autogroup") as f:
            print("scheduling: own session, " + f.read().strip())
    script, why_not = llamacpp_runner(os.path.abspath(args.llamacpp))
    if script is None:
        print("llama.cpp: skipped (%s)" % why_not)
    sys.stdout.flush()

    probe_bin = os.path.join(args.build, "bench", "bandwidth_probe")
    ceiling = {}

    def probe():
        # Run again before every model and at the end; the ceiling is the best seen, since
        # load from elsewhere only ever lowers it.
        out = run([probe_bin, "--threads", args.threads, "--tsv"]).stdout
        for line in out.strip().splitlines():
            t, best, _ = line.split("\t")
            ceiling[int(t)] = max(ceiling.get(int(t), 0.0), float(best))

    probe()
    print()

    # Pseudo-random prompt ids below 259 (byte tokens in every llama vocabulary, the smallest
    # test models' included): the cost of a step does not depend on which ids they are.
    prompt_ids = [1] + [3 + (i * 7919) % 256 for i in range(1, args.prompt)]
    header = ("| model | weights | threads | prefill tok/s ours | llama.cpp | ratio "
              "| decode tok/s ours | llama.cpp | ratio | decode GB/s ours |")
    print("%d-token prompt (one batch), %d decode steps; median of %d alternating rounds; "
          "llama.cpp KV cache %s, ours f32." % (args.prompt, args.gen, args.rounds, args.kv))
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    before = []
    release = None
    engine_bench = os.path.join(args.build, "bench", "engine_bench")
    for i, model in enumerate(args.models):
        name = os.path.basename(model)
        if i > 0:
            probe()
        for t in threads:
            mine, theirs, old = [], [], []
            busy = False
            engines = ["ours", "llama"] + (["baseline"] if args.baseline else [])
            for r in range(args.rounds):
                for who in engines[r % len(engines):] + engines[:r % len(engines)]:
                    if who == "llama" and script is None:
                        continue
                    busy |= not wait_idle(args.wait_idle)
                    if who == "ours":
                        mine.append(ours(engine_bench, model, t, args.prompt, args.gen))
                    elif who == "baseline":
                        old.append(ours(args.baseline, model, t, args.prompt, args.gen))
                    else:
                        theirs.append(llama(script, model, t, prompt_ids, args.gen, args.kv))
            if old:
                before.append((name, t, statistics.median(m["prefill"] for m in old),
                               statistics.median(m["prefill"] for m in mine),
                               statistics.median(m["decode"] for m in old),
                               statistics.median(m["decode"] for m in mine)))
            pre = statistics.median(m["prefill"] for m in mine)
            dec = statistics.median(m["decode"] for m in mine)
            lpre = statistics.median(x["prefill"] for x in theirs) if theirs else None
            ldec = statistics.median(x["decode"] for x in theirs) if theirs else None
            if theirs:
                release = theirs[0]["release"]
            gbs = dec * mine[0]["bytes"] / 1e9
            rows.append((name, mine[0]["type"], t, pre, lpre, dec, ldec, gbs))
            print("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                name + (" (busy)" if busy else ""), mine[0]["type"], t, fmt(pre), fmt(lpre),
                fmt(ratio(pre, lpre), 2), fmt(dec), fmt(ldec), fmt(ratio(dec, ldec), 2),
                fmt(gbs)))
            sys.stdout.flush()
    probe()
    print()
    print("Read-bandwidth ceiling (bench/bandwidth_probe, best of every probe in this run) and "
          "the share of it that decode reached:")
    print()
    print("| model | threads | decode GB/s ours | ceiling GB/s | share |")
    print("|---|---|---|---|---|")
    for name, _, t, _, _, _, _, gbs in rows:
        print("| %s | %d | %.1f | %.1f | %.0f%% |" % (name, t, gbs, ceiling[t],
                                                     100 * gbs / ceiling[t]))
    print()
    if before:
        print("This build against --baseline %s (same rounds):" % args.baseline)
        print()
        print("| model | threads | prefill tok/s before | after | ratio | decode tok/s before "
              "| after | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for name, t, pre0, pre1, dec0, dec1 in before:
            print("| %s | %d | %s | %s | %s | %s | %s | %s |" % (
                name, t, fmt(pre0), fmt(pre1), fmt(ratio(pre1, pre0), 2), fmt(dec0), fmt(dec1),
                fmt(ratio(dec1, dec0), 2)))
        print()
    if release is not None:
        print("llama.cpp: %s (node-llama-cpp prebuilt CPU binaries)" % release)
    print("load average after: %s" % load_average())
    if args.tsv_out:
        with open(args.tsv_out, "w") as f:
            f.write("model\tweights\tthreads\tprefill\tllama_prefill\tdecode\tllama_decode"
                    "\tdecode_gbs\tceiling_gbs\n")
            for name, typ, t, pre, lpre, dec, ldec, gbs in rows:
                f.write("%s\t%s\t%d\t%.2f\t%s\t%.2f\t%s\t%.2f\t%.2f\n" % (
                    name, typ, t, pre, fmt(lpre, 2), dec, fmt(ldec, 2), gbs,
                    ceiling.get(t, 0.0)))


if __name__ == "__main__":
    main()
