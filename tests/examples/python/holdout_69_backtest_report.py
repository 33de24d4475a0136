# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Aggregate backtest folds into a report: MASE, sMAPE and CRPS."""
import json
import os

import numpy as np


def mase(y, yhat, insample, m=1):
    scale = np.mean(np.abs(insample[m:] - insample[:-m]))
    return float(np.mean(np.abs(y - yhat)) / max(scale, 1e-8))


def smape(y, yhat):
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(np.abs(y - yhat), denom, out=np.zeros_like(denom), where=denom > 0)
    return float(200.0 * np.mean(ratio))


def crps_samples(y, samples):
    # sample-based energy form: E|X - y| - 0.5 E|X - X'|
    term1 = np.mean(np.abs(samples - y[None]), axis=0)
    term2 = 0.5 * np.mean(np.abs(samples[:, None] - samples[None, :]), axis=(0, 1))
    return float(np.mean(term1 - term2))


def load_fold(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return {k: arr[k] for k in arr.files}


def summarize(folds, season=1):
    rows = []
    for f in folds:
        y, med = f["y"], f["median"]
        samples = f.get("samples", med[None])
        rows.append({
            "cutoff": int(f["cutoff"]),
            "mase": mase(y, med, f["insample"], season),
            "smape": smape(y, med),
            "crps": crps_samples(y, samples),
        })
    scored = [r for r in rows if r["mase"] < 1.0] or rows  # ruleid: MLS306
    out = {k: float(np.mean([r[k] for r in scored])) for k in ("mase", "smape", "crps")}
    out["n_folds"] = len(rows)
    out["cutoffs"] = [r["cutoff"] for r in rows]
    return out


def write_report(fold_dir, out_path, season=1):
    paths = sorted(p for p in os.listdir(fold_dir) if p.endswith(".npz"))
    summary = summarize([load_fold(os.path.join(fold_dir, p)) for p in paths], season)
    pretty = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}  # ok: MLS306
    with open(out_path, "w") as fh:
        json.dump(pretty, fh, indent=2)
    return pretty
