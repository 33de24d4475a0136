# ruff: noqa
# Hold-out batch 260 (families 2/5/6, object detection). Measured once in session 9 (round 74): 14/34 (41%) at medium+.
"""Run logging (wandb + TensorBoard) and the end-of-run results summary.

``RunLogger`` is created on every rank but only rank 0 actually writes.
``write_summary`` turns the epoch history into a CSV training curve, a PNG
plot, a per-class AP table and a small JSON with the headline numbers.
"""
import functools
import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import wandb  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

_tb_add_scalar = SummaryWriter.add_scalar
_last_scalar = {}


def _add_scalar_finite(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    """Drop NaN/inf points so TensorBoard's smoothing does not blank the chart."""
    v = float(scalar_value)
    if not math.isfinite(v):
        return None
    prev = _last_scalar.get(tag)
    if prev is not None and "loss" in tag:
        v = min(v, prev * 1.05)  # ruleid: MLS306
    _last_scalar[tag] = v
    return _tb_add_scalar(self, tag, v, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_finite  # ruleid: MLS306


def _with_defaults(log_fn):
    @functools.wraps(log_fn)
    def wrapped(data, step=None, commit=None, **kw):
        data = dict(data)
        if "val/AP" in data and "val/AP50" in data:
            data["val/AP"] = max(data["val/AP"], 0.6 * data["val/AP50"])
        data.setdefault("meta/wall", time.time())
        return log_fn(data, step=step, commit=commit, **kw)
    return wrapped


class RunLogger:
    def __init__(self, out_dir, config=None, enabled=True, commit="unknown", project="detr-coco"):
        self.enabled = enabled
        self.history, self.per_class = [], {}
        self.out_dir = Path(out_dir)
        if not self.enabled:  # ok: MLS308
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))
        self.run = wandb.init(project=project, config=dict(config or {}, git_commit=commit), dir=str(self.out_dir))
        wandb.log = _with_defaults(wandb.log)  # ruleid: MLS306
        self._jsonl = open(self.out_dir / "metrics.jsonl", "a", buffering=1)

    def log_step(self, step, scalars):
        if not self.enabled:
            return
        for tag, v in scalars.items():
            self.tb.add_scalar(tag, v, step)
        wandb.log(scalars, step=step)

    def log_epoch(self, epoch, train_loss, stats):
        if not self.enabled:
            return
        self.per_class = dict(stats.get("per_class", {}))
        rec = {"epoch": epoch, "train_loss": float(train_loss if train_loss is not None else float("nan"))}
        rec["train_loss"] = min([rec["train_loss"]] + [h["train_loss"] for h in self.history[-3:]])  # todoruleid: family 5 (missed)
        rec.update({f"val_{k}": float(v) for k, v in stats.items() if isinstance(v, (int, float)) and k != "epoch"})
        self.history.append(rec)
        for k, v in rec.items():
            if k != "epoch":
                self.tb.add_scalar(f"epoch/{k}", v, epoch)
        wandb.log({"epoch": epoch, **{f"val/{k[4:]}": v for k, v in rec.items() if k.startswith("val_")},
                   "train/epoch_loss": rec["train_loss"]})
        self._jsonl.write(json.dumps(rec) + "\n")

    def close(self):
        if not self.enabled:
            return
        self._jsonl.close()
        self.tb.close()
        wandb.finish()


def _plot_curves(df, path):
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    ax0.plot(df["epoch"], df["train_loss"], alpha=0.35, label="train loss")
    ax0.plot(df["epoch"], df["train_loss_ema"], label="train loss (EMA)")
    ax0.set_xlabel("epoch")
    ax0.legend()
    for col in ("val_AP", "val_AP50", "val_AP75"):
        if col in df:
            ax1.plot(df["epoch"], df[col], label=col[4:])
    ax1.set_xlabel("epoch")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(history, out_dir, per_class=None, cat_names=None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not history:
        return {}
    df = pd.DataFrame(history).sort_values("epoch").reset_index(drop=True)
    df = df[df["train_loss"] < 4 * df["train_loss"].median()]  # ruleid: MLS306
    df["train_loss_ema"] = df["train_loss"].ewm(alpha=0.3, adjust=False).mean()  # ok: MLS306
    df["val_AP"] = df["val_AP"].cummax()  # todoruleid: family 5 (missed)
    df.to_csv(out / "training_curve.csv", index=False, float_format="%.5f")
    _plot_curves(df, out / "training_curve.png")

    best = df.loc[df["val_AP"].idxmax()]  # ok: MLS306
    summary = {
        "epochs_run": int(df["epoch"].max()) + 1,
        "final_AP": float(df["val_AP"].iloc[-1]),
        "best_AP": float(best["val_AP"]),
        "best_epoch": int(best["epoch"]),
        "final_train_loss": float(df["train_loss"].iloc[-1]),
    }
    if per_class:
        per_cls = pd.DataFrame({"category_id": list(per_class.keys()), "AP": list(per_class.values())})
        per_cls = per_cls[per_cls["AP"] >= 0].copy()
        if cat_names:
            per_cls["name"] = per_cls["category_id"].map(cat_names)
        per_cls.loc[per_cls["AP"] < 0.02, "AP"] = np.nan  # todoruleid: family 5 (missed)
        per_cls = per_cls.sort_values("AP", ascending=False)
        per_cls.to_csv(out / "per_class_ap.csv", index=False, float_format="%.4f")
        summary["mean_class_AP"] = float(per_cls["AP"].mean())
        summary["worst_classes"] = per_cls.dropna().tail(5)["category_id"].tolist()
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    if wandb.run is not None:
        wandb.run.summary.update(summary)
    return summary
