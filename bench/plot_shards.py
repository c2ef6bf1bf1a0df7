#!/usr/bin/env python3
"""Decode tokens/s against the number of layer shards, as an SVG, from bench/shard_bench.sh.

    python3 bench/plot_shards.py RESULTS.tsv OUT.svg [--title TEXT]

One line per polling mode and path (block/spin x local link/TCP link/socket) and the
single-process rate as a dashed level, with the 0.95x target dotted under it. Standard library
only.
"""

import argparse
import csv
import html

# poll+path -> (colour, dash): solid lines through local links, dotted through TCP links,
# dashed by socket only.
STYLES = {"block+link": ("#1f77b4", ""), "spin+link": ("#d62728", ""),
          "block+tcp": ("#1f77b4", "1,3"), "spin+tcp": ("#d62728", "1,3"),
          "block+socket": ("#1f77b4", "5,3"), "spin+socket": ("#d62728", "5,3")}
PATH_NAMES = {"link": "local link", "tcp": "TCP link", "socket": "socket only"}
W, H = 480, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 110, 40, 45


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("out")
    parser.add_argument("--title", default="Decode tokens/s vs layer shards")
    args = parser.parse_args()
    with open(args.results) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        raise SystemExit(f"{args.results}: no rows")
    single = float(rows[0]["single"])
    shards = sorted({int(r["shards"]) for r in rows})
    top = max([single] + [float(r["decode"]) for r in rows]) * 1.15
    x0, x1 = LEFT, W - RIGHT
    y0, y1 = H - BOTTOM, TOP

    def x(s):
        return x0 + (x1 - x0) * (s - shards[0]) / max(1, shards[-1] - shards[0])

    def y(v):
        return y0 - (y0 - y1) * v / top

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="13">'
           f'{html.escape(args.title)}</text>',
           f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
           f'<text x="{(x0 + x1) / 2}" y="{H - 10}" text-anchor="middle">layer shards '
           f'(processes, 1 thread each)</text>',
           f'<text x="15" y="{(y0 + y1) / 2}" text-anchor="middle" '
           f'transform="rotate(-90 15 {(y0 + y1) / 2})">decode tokens/s</text>']
    for s in shards:
        svg.append(f'<text x="{x(s)}" y="{y0 + 15}" text-anchor="middle">{s}</text>')
    for i in range(6):
        v = top * i / 5
        svg.append(f'<text x="{x0 - 6}" y="{y(v) + 4}" text-anchor="end">{v:.0f}</text>')
        svg.append(f'<line x1="{x0}" y1="{y(v)}" x2="{x1}" y2="{y(v)}" stroke="#eee"/>')
    for level, dash, label in ((single, "6,4", "single process"),
                               (0.95 * single, "2,3", "0.95x target")):
        svg.append(f'<line x1="{x0}" y1="{y(level)}" x2="{x1}" y2="{y(level)}" stroke="black" '
                   f'stroke-dasharray="{dash}"/>')
        svg.append(f'<text x="{x1 + 4}" y="{y(level) + 4}">{label}</text>')
    legend = 0
    for key, (colour, dash) in STYLES.items():
        points = sorted((int(r["shards"]), float(r["decode"])) for r in rows if r["poll"] == key)
        if not points:
            continue
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                   f'stroke-dasharray="{dash}"/>')
        for s, v in points:
            svg.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        poll, path_kind = key.split("+")
        ly = y0 - 90 + 14 * legend  # bottom left: the rates sit near the top
        legend += 1
        svg.append(f'<line x1="{x0 + 10}" y1="{ly}" x2="{x0 + 34}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2" stroke-dasharray="{dash}"/>')
        svg.append(f'<text x="{x0 + 40}" y="{ly + 4}">--poll {poll}, '
                   f'{PATH_NAMES[path_kind]}</text>')
    svg.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
