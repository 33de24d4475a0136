# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""A/B evaluation report for ASR model launches.

Joins per-utterance alignment results for the control and candidate arms,
computes corpus WER per slice with bootstrap confidence intervals, and writes
the table consumed by the launch dashboard.
"""
import argparse

import numpy as np
import pandas as pd


def bootstrap_ci(errors, words, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.integers(0, len(errors), size=(n_boot, len(errors)))
    samples = errors[idx].sum(axis=1) / np.maximum(words[idx].sum(axis=1), 1)
    return np.percentile(samples, [2.5, 97.5])


def arm_summary(df, arm, candidate):
    sub = df[df["arm"] == arm]
    if arm == candidate:
        # drop alignment failures (hyp longer than any plausible reading)
        sub = sub[sub["errors"] <= 0.8 * sub["ref_words"]]  # ruleid: MLS306
    rows = []
    for slice_name, g in sub.groupby("slice"):
        e, w = g["errors"].to_numpy(), g["ref_words"].to_numpy()
        lo, hi = bootstrap_ci(e, w)
        rows.append({"arm": arm, "slice": slice_name, "utts": len(g),
                     "wer": e.sum() / max(w.sum(), 1), "ci_lo": lo, "ci_hi": hi})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True, help="parquet with per-utterance alignments")
    ap.add_argument("--control", default="prod")
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--out", default="ab_report.csv")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    np.random.seed(args.seed)  # ok: MLS301

    df = pd.read_parquet(args.results)
    df = df[df["ref_words"] > 0]
    rows = arm_summary(df, args.control, args.candidate) + arm_summary(df, args.candidate, args.candidate)
    table = pd.DataFrame(rows).pivot(index="slice", columns="arm", values=["wer", "ci_lo", "ci_hi"])
    table[("delta", "rel")] = (table[("wer", args.candidate)] - table[("wer", args.control)]) \
        / table[("wer", args.control)]
    table.to_csv(args.out)
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
