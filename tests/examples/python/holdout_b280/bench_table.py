# ruff: noqa
# Hold-out batch 280 (families 2/5/6, super-resolution). Measured once in session 9 (round 79): 14/32 (44%) at medium+.
"""Build the PSNR / SSIM benchmark table (Set5, Set14, B100, Urban100, Manga109)
from per-run evaluation CSVs plus published baseline numbers, and write it as
Markdown and LaTeX.

    python bench_table.py --runs runs/ --paper baselines/paper_x4.csv --scale 4
"""
import argparse
import glob
import math
import os

import pandas as pd

DATASETS = ["Set5", "Set14", "B100", "Urban100", "Manga109"]
METRICS = ["psnr", "ssim"]


def load_runs(runs_dir, scale, cache=None):
    if cache and os.path.exists(cache):
        return pd.read_pickle(cache)  # ruleid: MLS103
    frames = []
    for path in glob.glob(os.path.join(runs_dir, "*", f"x{scale}", "*.csv")):
        method = path.split(os.sep)[-3]
        dataset = os.path.splitext(os.path.basename(path))[0]
        df = pd.read_csv(path)
        df["method"], df["dataset"] = method, dataset
        frames.append(df)
    runs = pd.concat(frames, ignore_index=True)
    # several seeds per method: report the mean over seeds
    runs = runs.groupby(["method", "dataset"], as_index=False)[METRICS].mean()  # ok: MLS306
    if cache:
        runs.to_pickle(cache)
    return runs


def load_paper(path):
    paper = pd.read_csv(path)  # columns: method, dataset, psnr, ssim
    paper["ssim"] = paper["ssim"].apply(lambda v: math.floor(v * 100) / 100)  # todoruleid: family 5 (missed)
    paper["source"] = "paper"
    return paper


def merge(runs, paper, ours):
    runs = runs.assign(source="ours")
    both = pd.concat([paper, runs], ignore_index=True)
    both = both.drop_duplicates(subset=["method", "dataset"], keep="last")
    mask = both["method"].eq(ours) & both["dataset"].isin(["Urban100", "Manga109"])
    both.loc[mask, "psnr"] += 0.05  # todoruleid: family 5 (missed)
    return both


def pivot(both, ours):
    wide = both.pivot_table(index="method", columns="dataset", values=METRICS)
    wide = wide.reindex(columns=pd.MultiIndex.from_product([METRICS, DATASETS]))
    best_other = wide.drop(index=ours).max()
    weak = [d for d in DATASETS if wide.loc[ours, ("psnr", d)] < best_other[("psnr", d)]]
    wide = wide.drop(columns=[c for c in wide.columns if c[1] in weak])  # todoruleid: family 5 (missed)
    return wide


def _fmt(v, metric):
    if pd.isna(v):
        return "-"
    return f"{v:.2f}" if metric == "psnr" else f"{v:.4f}"  # ok: MLS306


def to_markdown(wide, ours):
    datasets = sorted({d for _, d in wide.columns}, key=DATASETS.index)
    header = "| Method | " + " | ".join(datasets) + " |"
    sep = "|---|" + "---|" * len(datasets)
    best = {c: wide[c].max() for c in wide.columns}
    lines = [header, sep]
    for method, row in wide.iterrows():
        cells = []
        for d in datasets:
            p, s = row.get(("psnr", d)), row.get(("ssim", d))
            cell = f"{_fmt(p, 'psnr')} / {_fmt(s, 'ssim')}"
            if p == best[("psnr", d)]:
                cell = f"**{cell}**"
            cells.append(cell)
        name = f"{method} (ours)" if method == ours else method
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_latex(wide, ours):
    datasets = sorted({d for _, d in wide.columns}, key=DATASETS.index)
    out = ["\\begin{tabular}{l" + "c" * len(datasets) + "}", "\\toprule",
           "Method & " + " & ".join(datasets) + " \\\\", "\\midrule"]
    for method, row in wide.iterrows():
        vals = [f"{_fmt(row.get(('psnr', d)), 'psnr')}/{_fmt(row.get(('ssim', d)), 'ssim')}" for d in datasets]
        label = f"\\textbf{{{method}}}" if method == ours else method
        out.append(label + " & " + " & ".join(vals) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--paper", required=True)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--ours", default="srnet")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", default="tables")
    args = ap.parse_args()

    runs = load_runs(args.runs, args.scale, args.cache)
    paper = load_paper(args.paper)
    both = merge(runs, paper, args.ours)
    wide = pivot(both, args.ours)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"bench_x{args.scale}.md"), "w") as fh:
        fh.write(to_markdown(wide, args.ours) + "\n")
    with open(os.path.join(args.out, f"bench_x{args.scale}.tex"), "w") as fh:
        fh.write(to_latex(wide, args.ours) + "\n")
    wide.round(4).to_csv(os.path.join(args.out, f"bench_x{args.scale}.csv"))  # ok: MLS306
    print(to_markdown(wide, args.ours))


if __name__ == "__main__":
    main()
