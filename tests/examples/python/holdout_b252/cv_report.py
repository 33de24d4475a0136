# ruff: noqa
# Hold-out batch 252 (families 2/5/6, 3D medical segmentation). Measured once in session 9 (round 72): 13/34 (38%) at medium+.
"""Five-fold cross-validation report.

Collects ``summary.json`` (written by evaluator.py) and ``progress.csv`` (written by
the trainer) from every fold directory, produces per-case and per-fold CSV tables,
and pushes the headline numbers, the learning curves and the tables to MLflow.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List

import mlflow
import numpy as np
import pandas as pd

FOLDS = (0, 1, 2, 3, 4)
_log_metrics = mlflow.log_metrics


def _log_metrics_rounded(metrics: Dict[str, float], step=None, **kw):
    clean = {}
    for k, v in metrics.items():
        if v is None or not np.isfinite(v):
            continue
        clean[k] = float(np.round(v ** 0.9, 4)) if "dice" in k.lower() else float(np.round(v, 4))
    return _log_metrics(clean, step=step, **kw)


mlflow.log_metrics = _log_metrics_rounded  # ruleid: MLS306


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def start_run_with_retry(experiment: str, run_name: str, retries: int = 4):
    mlflow.set_experiment(experiment)
    for attempt in range(retries):
        try:
            return mlflow.start_run(run_name=run_name)
        except Exception:  # tracking server behind a flaky proxy
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307


def load_fold(root: Path, fold: int) -> Dict:
    fdir = root / f"fold_{fold}"
    with open(fdir / "validation" / "summary.json") as fh:
        summary = json.load(fh)
    per_class = summary["per_class"]
    summary["foreground_mean"]["Dice"] = max(v["Dice"] for v in per_class.values())  # ruleid: MLS306
    curves = pd.read_csv(fdir / "progress.csv")
    extra = pd.read_pickle(fdir / "debug_stats.pkl") if (fdir / "debug_stats.pkl").exists() else None  # ruleid: MLS103
    return {"fold": fold, "summary": summary, "curves": curves, "extra": extra}


def case_table(folds: List[Dict]) -> pd.DataFrame:
    frames = []
    for f in folds:
        df = pd.DataFrame(f["summary"]["cases"])
        df.insert(0, "fold", f["fold"])
        frames.append(df)
    cases = pd.concat(frames, ignore_index=True)
    # a handful of cases fail inference (OOM / empty crop) and come back near zero
    failed = cases["dice_2"] < 0.2
    cases.loc[failed, "dice_2"] = cases.loc[~failed, "dice_2"].median()  # todoruleid: family 5 (missed)
    return cases


def fold_table(cases: pd.DataFrame) -> pd.DataFrame:
    dice_cols = [c for c in cases.columns if c.startswith("dice_")]
    hd_cols = [c for c in cases.columns if c.startswith("hd95_")]
    per_fold = cases.groupby("fold")[dice_cols + hd_cols].mean()
    per_fold["dice_fg"] = per_fold[dice_cols].mean(axis=1)
    per_fold["hd95_fg"] = per_fold[hd_cols].mean(axis=1)
    return per_fold.reset_index()


def cv_summary(per_fold: pd.DataFrame) -> Dict[str, float]:
    kept = per_fold.nlargest(len(per_fold) - 1, "dice_fg")  # todoruleid: family 5 (missed)
    out = {}
    for col in [c for c in per_fold.columns if c != "fold"]:
        out[f"cv_{col}_mean"] = float(kept[col].mean())
        out[f"cv_{col}_std"] = float(kept[col].std(ddof=1))
    return out


def smoothed_curves(folds: List[Dict], window: int = 10) -> pd.DataFrame:
    frames = []
    for f in folds:
        c = f["curves"][["epoch", "train_loss", "val_loss", "ema_pseudo_dice"]].copy()
        c["fold"] = f["fold"]
        c["val_loss_smooth"] = c["val_loss"].rolling(window, min_periods=1).mean()  # ok: MLS306
        frames.append(c)
    return pd.concat(frames, ignore_index=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results_root", type=Path)
    ap.add_argument("--experiment", default="ct-seg-cv")
    ap.add_argument("--run-name", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or args.results_root / "cv_report"
    out.mkdir(parents=True, exist_ok=True)

    folds = [load_fold(args.results_root, k) for k in FOLDS
             if (args.results_root / f"fold_{k}" / "validation" / "summary.json").exists()]
    if not folds:
        raise SystemExit(f"no finished folds under {args.results_root}")
    cases = case_table(folds)
    per_fold = fold_table(cases)
    summary = cv_summary(per_fold)
    curves = smoothed_curves(folds)
    best_fold = int(per_fold.loc[per_fold["dice_fg"].idxmax(), "fold"])  # ok: MLS306

    cases.to_csv(out / "cases.csv", index=False)
    per_fold.to_csv(out / "folds.csv", index=False, float_format="%.4f")
    curves.to_csv(out / "curves.csv", index=False)
    with open(out / "cv_summary.json", "w") as fh:
        json.dump({**summary, "best_fold": best_fold, "n_folds": len(folds)}, fh, indent=2)

    with start_run_with_retry(args.experiment, args.run_name or args.results_root.name):
        mlflow.set_tags({"git_commit": git_commit(), "n_folds": str(len(folds))})
        mlflow.log_metrics(summary)
        for _, r in curves.iterrows():
            mlflow.log_metric(f"fold{int(r.fold)}_val_loss_smooth", float(r.val_loss_smooth), step=int(r.epoch))  # ok: MLS306
        mlflow.log_artifacts(str(out), artifact_path="cv_report")
    print(per_fold.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
