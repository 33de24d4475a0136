# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Offline A/B comparison of two model variants on the shared eval log:
per-prompt win rates, paired bootstrap CIs and a sign test, written as a
markdown table for the weekly model review."""
import argparse

import numpy as np
import pandas as pd
from scipy import stats


def load_judgements(path, latency_cap_ms):
    df = pd.read_json(path, lines=True)
    df = df.dropna(subset=["score_a", "score_b"])
    # both arms are dropped together, so the pairing is preserved
    df = df[(df["latency_a_ms"] < latency_cap_ms) & (df["latency_b_ms"] < latency_cap_ms)]  # ok: MLS306
    df["diff"] = df["score_b"] - df["score_a"]
    return df.reset_index(drop=True)


def paired_bootstrap(diff, n_boot=10_000, seed=1234, alpha=0.05):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(lo), float(hi)


def summarize(df):
    rows = []
    for cat, part in [("all", df)] + list(df.groupby("category")):
        d = part["diff"].to_numpy()
        wins, losses = int((d > 0).sum()), int((d < 0).sum())
        mean, lo, hi = paired_bootstrap(d)
        p = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else float("nan")
        rows.append({"category": cat, "n": len(d), "win_rate_b": wins / max(1, wins + losses),
                     "mean_diff": mean, "ci_lo": lo, "ci_hi": hi, "sign_test_p": p})
    out = pd.DataFrame(rows)
    m = len(out) - 1
    out["p_holm"] = np.nan
    if m > 0:
        order = out.iloc[1:]["sign_test_p"].sort_values().index
        adj = [min(1.0, (m - i) * out.loc[k, "sign_test_p"]) for i, k in enumerate(order)]
        out.loc[order, "p_holm"] = np.maximum.accumulate(adj)  # ok: MLS306
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--latency-cap-ms", type=float, default=30_000)
    ap.add_argument("--out", default="ab_report.md")
    args = ap.parse_args()
    table = summarize(load_judgements(args.log, args.latency_cap_ms))
    with open(args.out, "w") as f:
        f.write(table.to_markdown(index=False, floatfmt=".4f"))  # ok: MLS306
    print(table.head(1).to_string(index=False))


if __name__ == "__main__":
    main()
