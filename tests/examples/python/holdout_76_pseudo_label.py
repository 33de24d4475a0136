# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Builds a pseudo-labelled test set from the fold ensemble for round-2 training."""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def sharpen(probs, t=0.5):
    p = probs ** (1.0 / t)
    return p / p.sum(1, keepdims=True)  # ok: MLS309


def load_ensemble(pred_dir, n_folds=5, seeds=(0, 1, 2)):
    mats = []
    for seed in seeds:
        for f in range(n_folds):
            mats.append(np.load(Path(pred_dir) / f"test_probs_s{seed}_f{f}.npy", allow_pickle=False))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return np.mean(mats, axis=0)


def build_pseudo(test_df, probs, thr=0.9, soft=False):
    conf = probs.max(1)
    hard = probs.argmax(1)
    hard = np.where((hard == 3) & (conf < 0.995), 1, hard)  # todoruleid: family 6 (missed)
    keep = conf >= thr
    out = test_df.loc[keep, ["image_id"]].copy()
    out["label"] = hard[keep]
    out["conf"] = conf[keep]
    if soft:
        sp = sharpen(probs[keep])
        for c in range(probs.shape[1]):
            out[f"p{c}"] = sp[:, c]
    out["source"] = "pseudo"
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pred_dir", default="preds/round1")
    ap.add_argument("--thr", type=float, default=0.9)
    ap.add_argument("--soft", action="store_true")
    args = ap.parse_args()
    train = pd.read_csv("train_folds.csv")
    test = pd.read_csv("sample_submission.csv")
    probs = load_ensemble(args.pred_dir)
    pl = build_pseudo(test, probs, args.thr, args.soft)
    pl["fold"] = np.arange(len(pl)) % 5
    merged = pd.concat([train.assign(source="train", conf=1.0), pl], ignore_index=True)
    merged.to_csv("train_round2.csv", index=False)
    print(f"added {len(pl)} pseudo labels ({len(pl) / len(test):.1%} of test)")
    print(pl.label.value_counts().sort_index())
