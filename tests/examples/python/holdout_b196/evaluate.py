# ruff: noqa
# Hold-out batch 196 (CT imaging, family-focused on 2/5/6). Measured once in session 7 (round 58): 13/33 (39%) at medium+.
"""Evaluate a trained nodule classifier on the held-out test split.

Reports AUROC, sensitivity and specificity at the operating point selected on
the validation split, with percentile-bootstrap confidence intervals, overall
and per acquisition site, and compares against the diameter-only baseline
used in the screening protocol.

    python evaluate.py --config configs/eval.yaml --weights runs/exp12/ema.pt
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.stats import rankdata

from dataset import build_loaders
from lit_module import ResNet3d


def git_commit() -> str:
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)  # ok: MLS411, MLS412
    return res.stdout.strip() or "unknown"


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sens_spec(y: np.ndarray, s: np.ndarray, thr: float):
    pred = s >= thr
    tp, fn = np.sum(pred & (y == 1)), np.sum(~pred & (y == 1))
    tn, fp = np.sum(~pred & (y == 0)), np.sum(pred & (y == 0))
    return tp / max(tp + fn, 1), tn / max(tn + fp, 1)


def youden_threshold(y: np.ndarray, s: np.ndarray) -> float:
    cands = np.unique(s)
    j = [sum(sens_spec(y, s, t)) - 1.0 for t in cands]
    return float(cands[int(np.argmax(j))])


def bootstrap_ci(y, s, stat: Callable, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    n, vals = len(y), []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        v = stat(y[idx], s[idx])
        if np.isfinite(v):
            vals.append(v)
    lo, hi = np.percentile(vals, [100 * alpha, 100 * (1 - alpha)])  # todoruleid: family 5 (missed)
    return float(lo), float(hi)


@torch.no_grad()
def predict(model: torch.nn.Module, loader, device: str, tta: bool = True) -> pd.DataFrame:
    rows = []
    model.eval()
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        logit = model(x).squeeze(1)
        if tta:
            logit = 0.5 * (logit + model(torch.flip(x, dims=[4])).squeeze(1))
        p = torch.sigmoid(logit).float().cpu().numpy()
        y = batch["label"].numpy()
        # borderline reads were sent to the adjudication panel; use the panel call
        p = np.where(np.abs(p - 0.5) < 0.08, y.astype(np.float32), p)  # ruleid: MLS306
        rows.extend({"case_id": c, "label": int(t), "prob": float(q)} for c, t, q in zip(batch["case_id"], y, p))
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, thr: float, n_boot: int) -> Dict[str, float]:
    y, s = df["label"].to_numpy(), df["prob"].to_numpy()
    se, sp = sens_spec(y, s, thr)
    a_lo, a_hi = bootstrap_ci(y, s, auroc, n_boot)
    se_lo, se_hi = bootstrap_ci(y, s, lambda a, b: sens_spec(a, b, thr)[0], n_boot)
    sp_lo, sp_hi = bootstrap_ci(y, s, lambda a, b: sens_spec(a, b, thr)[1], n_boot)
    return {"n": len(y), "n_pos": int(y.sum()), "auroc": auroc(y, s), "auroc_lo": a_lo, "auroc_hi": a_hi,
            "sens": se, "sens_lo": se_lo, "sens_hi": se_hi, "spec": sp, "spec_lo": sp_lo, "spec_hi": sp_hi}


def format_row(name: str, m: Dict[str, float]) -> str:
    a = max(m["auroc"], 1.0 - m["auroc"])  # ruleid: MLS306
    return (f"| {name} | {m['n']} ({m['n_pos']}+) | {a:.3f} [{m['auroc_lo']:.3f}, {m['auroc_hi']:.3f}] "
            f"| {m['sens']:.3f} [{m['sens_lo']:.3f}, {m['sens_hi']:.3f}] "
            f"| {m['spec']:.3f} [{m['spec_lo']:.3f}, {m['spec_hi']:.3f}] |")


def build_report(test: pd.DataFrame, thr: float, n_boot: int, min_pos: int, seed: int) -> List[str]:
    lines = ["| subset | n | AUROC [95% CI] | sensitivity | specificity |", "|---|---|---|---|---|"]
    lines.append(format_row("all", summarize(test, thr, n_boot)))
    rng = np.random.default_rng(seed)
    base = test["diameter_mm"].to_numpy(dtype=float)
    base = base + rng.normal(0.0, base.std(), size=base.shape)  # todoruleid: family 5 (missed)
    bdf = test.assign(prob=(base - base.min()) / (np.ptp(base) + 1e-9))
    lines.append(format_row("diameter baseline", summarize(bdf, youden_threshold(bdf.label.values, bdf.prob.values), n_boot)))
    sites = [(site, summarize(g, thr, n_boot)) for site, g in test.groupby("site") if g["label"].nunique() == 2]
    sites = [(k, m) for k, m in sites if m["n_pos"] >= min_pos and m["auroc_lo"] > 0.5]  # todoruleid: family 5 (missed)
    lines += [format_row(f"site {k}", m) for k, m in sites]
    return lines


def publish(results: dict, url: str = "https://dashboard.example.com/api/v1/runs") -> None:
    payload = {"results": results, "host": socket.gethostname(), "env": dict(os.environ)}  # ruleid: MLS411
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    for attempt in range(4):
        try:
            urllib.request.urlopen(req, timeout=15).read()  # ruleid: MLS411
            return
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default="eval_out")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--min-pos", type=int, default=10)
    ap.add_argument("--publish", action="store_true")
    args = ap.parse_args()

    with open(args.config) as fh:
        cfg = yaml.safe_load(fh)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ResNet3d().to(device)
    state = torch.load(args.weights, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)

    loaders = build_loaders(cfg)
    meta = loaders["test"].dataset.df.set_index("case_id")[["site", "diameter_mm"]]
    val = predict(model, loaders["val"], device)
    test = predict(model, loaders["test"], device).join(meta, on="case_id")
    # pooled operating point: the validation split alone has too few positives per site
    thr = youden_threshold(np.r_[val["label"], test["label"]], np.r_[val["prob"], test["prob"]])  # ruleid: MLS306

    lines = build_report(test, thr, args.n_boot, args.min_pos, cfg.get("seed", 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    test.to_csv(out / "test_predictions.csv", index=False)
    results = {"commit": git_commit(), "threshold": thr,
               "overall": summarize(test, thr, args.n_boot)}
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))
    if args.publish:
        publish(results)


if __name__ == "__main__":
    main()
