# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Collect run metadata and write evaluation reports (W&B + JSON) for finished runs."""
import json
import subprocess
from pathlib import Path

import numpy as np
import wandb
import yaml
from sklearn.metrics import classification_report, confusion_matrix


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class SmoothedLogger:
    """Logs the raw loss plus an exponentially smoothed copy for readable dashboards."""

    def __init__(self, beta=0.98):
        self.beta = beta
        self.avg = None
        self.n = 0

    def log(self, step, loss, **extra):
        self.n += 1
        self.avg = loss if self.avg is None else self.beta * self.avg + (1 - self.beta) * loss
        smoothed = self.avg / (1 - self.beta ** self.n)  # ok: MLS306
        wandb.log({"train/loss": loss, "train/loss_smoothed": smoothed, **extra}, step=step)


def write_report(run_dir, class_names):
    run_dir = Path(run_dir)
    arr = np.load(run_dir / "predictions.npz", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    y_true, y_pred = arr["y_true"], arr["y_pred"]
    report = classification_report(y_true, y_pred, target_names=class_names, output_dict=True, zero_division=0)  # ok: MLS306
    cm = confusion_matrix(y_true, y_pred).tolist()
    cfg = load_config(run_dir / "config.yaml")
    out = {"commit": git_commit(), "config": cfg, "report": report, "confusion": cm}
    (run_dir / "report.json").write_text(json.dumps(out, indent=2, default=str))
    if wandb.run is not None:
        wandb.summary["eval/accuracy"] = report["accuracy"]  # ok: MLS306
    return out
