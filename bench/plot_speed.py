#!/usr/bin/env python3
"""Tokens/s against threads as an SVG, from the rows bench/compare_llamacpp.py writes.

    python3 bench/plot_speed.py RESULTS.tsv OUT.svg [--title TEXT]

Two panels (decode, prefill); one line per model and engine: shardrun solid, llama.cpp
dashed, one colour per model. Decode also shows each thread count's read-bandwidth ceiling
converted to tokens/s for the first model (dotted), the most a decode step can reach.
Standard library only.
"""

import argparse
import csv
import html

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
PANEL_W, PANEL_H = 360, 260
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 60, 20, 50, 50


def read_rows(path):
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        r["threads"] = int(r["threads"])
        for key in ("prefill", "llama_prefill", "decode", "llama_decode", "decode_gbs",
                    "ceiling_gbs"):
            r[key] = None if r[key] in ("", "-") else float(r[key])
    return rows


def nice_max(v):
    step = 1
    while step * 10 < v:
        step *= 10
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= v:
            return m * step
    return 10 * step


def panel(x0, title, series, threads, ymax):
    """SVG elements of one panel: series is [(label, colour, dash, {threads: value})]."""
    out = []
    left, top = x0 + MARGIN_L, MARGIN_T
    w = PANEL_W - MARGIN_L - MARGIN_R
    h = PANEL_H - MARGIN_T - MARGIN_B
    lo, hi = min(threads), max(threads)

    def px(t):
        return left + (w / 2 if hi == lo else (t - lo) / (hi - lo) * w)

    def py(v):
        return top + h - v / ymax * h

    out.append('<text x="%g" y="%g" font-size="14" text-anchor="middle">%s</text>' %
               (left + w / 2, top - 25, html.escape(title)))
    for i in range(6):
        v = ymax * i / 5
        out.append('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#ddd"/>' %
                   (left, py(v), left + w, py(v)))
        out.append('<text x="%g" y="%g" font-size="11" text-anchor="end">%g</text>' %
                   (left - 6, py(v) + 4, round(v, 1)))
    for t in threads:
        out.append('<text x="%g" y="%g" font-size="11" text-anchor="middle">%d</text>' %
                   (px(t), top + h + 16, t))
    out.append('<text x="%g" y="%g" font-size="12" text-anchor="middle">threads</text>' %
               (left + w / 2, top + h + 34))
    out.append('<text x="%g" y="%g" font-size="12" text-anchor="middle" '
               'transform="rotate(-90 %g %g)">tokens/s</text>' %
               (x0 + 16, top + h / 2, x0 + 16, top + h / 2))
    out.append('<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#888"/>' %
               (left, top, w, h))
    for label, colour, dash, values in series:
        pts = [(px(t), py(values[t])) for t in threads if values.get(t) is not None]
        if not pts:
            continue
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" stroke-dasharray="%s" '
                   'points="%s"/>' % (colour, dash, " ".join("%.1f,%.1f" % p for p in pts)))
        for x, y in pts:
            out.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (x, y, colour))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tsv")
    p.add_argument("svg")
    p.add_argument("--title", default="shardrun vs llama.cpp, single process")
    args = p.parse_args()
    rows = read_rows(args.tsv)
    models = list(dict.fromkeys(r["model"] for r in rows))
    threads = sorted({r["threads"] for r in rows})

    def values(model, key, scale=None):
        out = {}
        for r in rows:
            if r["model"] == model and r[key] is not None:
                out[r["threads"]] = r[key] if scale is None else r[key] * scale(r)
        return out

    decode, prefill, legend = [], [], []
    for i, m in enumerate(models):
        c = COLOURS[i % len(COLOURS)]
        decode.append((m, c, "none", values(m, "decode")))
        decode.append((m, c, "6,4", values(m, "llama_decode")))
        prefill.append((m, c, "none", values(m, "prefill")))
        prefill.append((m, c, "6,4", values(m, "llama_prefill")))
        legend.append((m, c))
    if models:  # the first model's ceiling in tokens/s: ceiling GB/s / GB read per token
        ceiling = values(models[0], "ceiling_gbs",
                         lambda r: r["decode"] / r["decode_gbs"] if r["decode_gbs"] else 0)
        decode.append(("ceiling", COLOURS[0], "2,3", ceiling))
    all_decode = [v for _, _, _, s in decode for v in s.values()]
    all_prefill = [v for _, _, _, s in prefill for v in s.values()]

    width = 2 * PANEL_W
    height = PANEL_H + 30 + 18 * (len(legend) + 3)
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%g" y="18" font-size="15" text-anchor="middle">%s</text>' %
           (width / 2, html.escape(args.title))]
    svg += panel(0, "decode", decode, threads, nice_max(max(all_decode, default=1)))
    svg += panel(PANEL_W, "prefill", prefill, threads, nice_max(max(all_prefill, default=1)))
    y = PANEL_H + 20
    styles = [("shardrun", "none"), ("llama.cpp", "6,4")]
    if models:
        styles.append(("decode ceiling (read bandwidth), " + models[0], "2,3"))
    for label, dash in styles:
        svg.append('<line x1="70" y1="%d" x2="110" y2="%d" stroke="#333" stroke-width="2" '
                   'stroke-dasharray="%s"/>' % (y, y, dash))
        svg.append('<text x="118" y="%d" font-size="12">%s</text>' % (y + 4, html.escape(label)))
        y += 18
    for label, colour in legend:
        svg.append('<rect x="70" y="%d" width="40" height="8" fill="%s"/>' % (y - 4, colour))
        svg.append('<text x="118" y="%d" font-size="12">%s</text>' % (y + 4, html.escape(label)))
        y += 18
    svg.append("</svg>")
    with open(args.svg, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
