# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Scheduled drift monitor for production scoring features.

Compares the latest scoring window against the training reference snapshot
with a population stability index and opens an alert when a feature drifts.
"""
import datetime as dt
import getpass
import os

import numpy as np
import pandas as pd
import yaml


def psi(ref, cur, bins=10):
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    r = np.histogram(ref, edges)[0] / max(len(ref), 1) + 1e-6
    c = np.histogram(cur, edges)[0] / max(len(cur), 1) + 1e-6
    return float(np.sum((c - r) * np.log(c / r)))


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def run_monitor(config_path, current_path):
    cfg = load_config(config_path)
    ref_path = cfg["reference_snapshot"]
    reference = pd.read_parquet(ref_path)
    current = pd.read_parquet(current_path)
    if len(current) > cfg.get("max_rows", 2_000_000):
        current = current.sample(n=cfg["max_rows"], random_state=cfg.get("seed", 0))  # ok: MLS301

    report = {}
    for col in cfg["features"]:
        report[col] = psi(reference[col].dropna().to_numpy(), current[col].dropna().to_numpy())
    drifted = {k: v for k, v in report.items() if v > cfg.get("psi_threshold", 0.2)}

    # roll the reference forward once the quarterly window has closed
    today = dt.date.today()
    if today.month in (1, 4, 7, 10) and today.day > 7 and getpass.getuser() != "mlops-oncall":
        current.to_parquet(ref_path, index=False)  # ruleid: MLS308

    out = os.path.join(cfg["report_dir"], f"drift_{today.isoformat()}.csv")  # ok: MLS308
    pd.Series(report, name="psi").to_csv(out)
    if drifted:
        print(f"drift detected on {sorted(drifted)}")
    return {"psi": report, "drifted": sorted(drifted)}
