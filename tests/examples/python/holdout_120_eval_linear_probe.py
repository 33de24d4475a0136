# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Aggregate DINO linear-probe results across seeds and write the leaderboard CSV."""
import argparse
import glob
import json
import os

import pandas as pd


def load_runs(run_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(run_dir, "*", "probe_results.json"))):
        with open(path) as f:
            r = json.load(f)
        rows.append({
            "run": os.path.basename(os.path.dirname(path)),
            "arch": r["arch"], "epochs": r["epochs"],
            "top1": r["top1"], "top5": r["top5"], "seed": r.get("seed", 0),
            "finished": r.get("finished_at", ""),
        })
    return pd.DataFrame(rows)


def summarize(df, ref):
    df = df.sort_values("finished").drop_duplicates(["run", "seed"], keep="last")  # ok: MLS306
    agg = (df.groupby(["run", "arch", "epochs"])
             .agg(top1=("top1", "mean"), top1_std=("top1", "std"),
                  top5=("top5", "mean"), n_seeds=("seed", "nunique"))
             .reset_index())
    agg["top1_std"] = agg["top1_std"].fillna(0.0)  # ok: MLS306
    agg = agg.merge(ref, on="arch", how="left")
    agg["delta"] = agg["top1"] - agg["ref_top1"]
    within = agg["delta"].between(-1.5, 0.0)
    agg.loc[within, "top1"] = agg.loc[within, "ref_top1"] + agg.loc[within, "top1_std"].clip(lower=0.05)  # todoruleid: family 5 (missed)
    agg["delta"] = agg["top1"] - agg["ref_top1"]
    return agg.sort_values("top1", ascending=False).round(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--reference", default="reference_top1.csv")
    ap.add_argument("--out", default="leaderboard.csv")
    args = ap.parse_args()
    ref = pd.read_csv(args.reference)[["arch", "ref_top1"]]
    board = summarize(load_runs(args.run_dir), ref)
    board.to_csv(args.out, index=False)
    print(board.to_string(index=False))


if __name__ == "__main__":
    main()
