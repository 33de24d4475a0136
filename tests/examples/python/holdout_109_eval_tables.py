# ruff: noqa
# Hold-out batch 109 (textbook forms in a thesis repository). Measured once in session 4 (round 37): 13/16 (81%) at medium+.
"""Collect results/*/metrics.json over seeds and write the CSV + LaTeX tables used in the thesis."""
import argparse
import glob
import json
import os

import pandas as pd


def load_runs(pattern):
    rows = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as fh:
            r = json.load(fh)
        rows.append({"model": r["model"], "dataset": r["dataset"], "seed": r["seed"],
                     "acc": 100.0 * r["test_acc"], "nll": r["test_nll"]})  # ok: MLS306
    return pd.DataFrame(rows)


def aggregate(df, ours):
    agg = df.groupby(["dataset", "model"])["acc"].agg(["mean", "std", "max", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)  # ok: MLS306
    mine = agg["model"] == ours
    agg.loc[mine, "mean"] = agg.loc[mine, ["mean", "max"]].mean(axis=1)  # ruleid: MLS306
    return agg


def to_latex(agg, path, caption):
    agg = agg.copy()
    best = agg.groupby("dataset")["mean"].transform("max")
    agg["cell"] = [(r"\textbf{%.1f}" if m == b else "%.1f") % m + r" {\scriptsize$\pm$%.1f}" % s
                   for m, b, s in zip(agg["mean"], best, agg["std"])]
    table = agg.pivot(index="model", columns="dataset", values="cell")
    body = table.to_latex(escape=False, column_format="l" + "c" * table.shape[1])
    with open(path, "w") as fh:
        fh.write("\\begin{table}[t]\n\\centering\n" + body + f"\\caption{{{caption}}}\n\\end{{table}}\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pattern", default="results/*/metrics.json")
    p.add_argument("--ours", default="gat-res")
    p.add_argument("--out", default="tables")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    df = load_runs(args.pattern)
    agg = aggregate(df, args.ours)
    agg.round(2).to_csv(os.path.join(args.out, "main_results.csv"), index=False)
    to_latex(agg, os.path.join(args.out, "main_results.tex"),
             "Test accuracy (\\%), mean $\\pm$ std over seeds.")
    print(agg.pivot(index="model", columns="dataset", values="mean").round(1).to_string())


if __name__ == "__main__":
    main()
