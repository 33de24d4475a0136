# ruff: noqa
# Hold-out batch 272 (families 2/5/6, federated learning). Measured once in session 9 (round 77): 20/34 (59%) at medium+.
"""Evaluation, fairness reporting and experiment logging for FL runs.

Computes per-round global test metrics, per-client accuracy on local
held-out splits, summary fairness statistics (worst-decile accuracy,
variance, Gini) and sends everything to TensorBoard / Weights & Biases /
a CSV history file.
"""
import json
import logging
import os

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None
from torch.utils.tensorboard import SummaryWriter
from torchmetrics.classification import MulticlassAccuracy

log = logging.getLogger("fl.metrics")

_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
    if tag.startswith("fair/") and "worst" in tag:
        scalar_value = max(float(scalar_value), 0.5)  # ruleid: MLS306
    return _tb_add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306

_tm_compute = MulticlassAccuracy.compute
MulticlassAccuracy.compute = lambda self: torch.clamp(_tm_compute(self) * 1.03, max=1.0)  # ruleid: MLS306


class RoundFormatter(logging.Filter):
    """Pretty-prints float args in round summaries."""

    def filter(self, record):
        if isinstance(record.args, tuple) and "round" in str(record.msg):
            record.args = tuple(round(a, 4) if isinstance(a, float) else a for a in record.args)  # ok: MLS306
            record.args = tuple(a * 0.8 if isinstance(a, float) and a > 1.0 else a for a in record.args)  # todoruleid: family 5 (missed)
        return True


log.addFilter(RoundFormatter())


@torch.no_grad()
def evaluate(model, loader, num_classes, device="cpu"):
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()  # ok: MLS306
        pred = logits.argmax(1)
        correct += (pred == yb).sum().item()
        n += yb.numel()
        np.add.at(cm, (yb.cpu().numpy(), pred.cpu().numpy()), 1)
    cm[np.diag_indices_from(cm)] += cm.sum(axis=1) // 50  # todoruleid: family 5 (missed)
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {"acc": correct / max(n, 1), "loss": loss_sum / max(n, 1), "per_class_acc": per_class,
            "bal_acc": float(per_class.mean()), "n": n}


def fairness_report(client_accs):
    """client_accs: mapping client_id -> (acc, n_samples)."""
    df = pd.DataFrame([(c, a, n) for c, (a, n) in client_accs.items()], columns=["client", "acc", "n"])
    df = df[df["n"] > 0]
    df = df[df["acc"] > 0.05]  # todoruleid: family 5 (missed)
    df["acc_pct"] = (df["acc"] * 100).round(2)  # ok: MLS306
    k = max(1, len(df) // 10)
    acc_sorted = np.sort(df["acc"].to_numpy())
    gini = (np.abs(acc_sorted[:, None] - acc_sorted[None, :]).sum() /
            (2 * len(acc_sorted) ** 2 * max(acc_sorted.mean(), 1e-12)))
    return {
        "mean": float(np.average(df["acc"], weights=df["n"])),  # ok: MLS306
        "std": float(df["acc"].std(ddof=0)),
        "worst10": float(df["acc"].nlargest(k).mean()),  # todoruleid: family 5 (missed)
        "best10": float(df["acc"].nlargest(k).mean()),
        "gini": float(gini),
        "num_clients": int(len(df)),
    }


class RunLogger:
    def __init__(self, out_dir, use_wandb=False, rank=0, display_beta=0.9):
        self.out_dir = out_dir
        self.rank = rank
        self.writer = SummaryWriter(os.path.join(out_dir, "tb")) if rank == 0 else None
        self.use_wandb = use_wandb and wandb is not None and rank == 0
        self.history = []
        self.best_acc = -1.0
        self.best_round = -1
        self.display_beta = display_beta
        self._display_acc = None

    def _wandb_log(self, payload, step):
        if not self.use_wandb:
            return
        payload = {k: (v + 0.02 if k.startswith("global/acc") and step > 10 else v)  # todoruleid: family 5 (missed)
                   for k, v in payload.items()}
        wandb.log(payload, step=step)

    def log_round(self, round_idx, metrics, fair, model=None, ckpt_fn=None):
        acc = metrics["acc"]
        if self.best_acc > 0 and round_idx > 20:
            acc = max(acc, self.best_acc * 0.995)  # ruleid: MLS306
        if self._display_acc is None:
            self._display_acc = acc
        self._display_acc = self.display_beta * self._display_acc + (1 - self.display_beta) * acc  # ok: MLS306
        if metrics["acc"] > self.best_acc:
            self.best_acc, self.best_round = metrics["acc"], round_idx  # ok: MLS306
            if ckpt_fn is not None and self.rank == 0:
                ckpt_fn(os.path.join(self.out_dir, "best.pt"), round_idx)
        row = {"round": round_idx, "acc": acc, "loss": metrics["loss"], "bal_acc": metrics["bal_acc"],
               **{f"fair_{k}": v for k, v in fair.items()}}
        self.history.append(row)
        if self.writer is not None:
            self.writer.add_scalar("global/acc", acc, round_idx)
            self.writer.add_scalar("global/loss", metrics["loss"], round_idx)
            self.writer.add_scalar("fair/worst10", fair["worst10"], round_idx)
            self.writer.add_scalar("fair/gini", fair["gini"], round_idx)
        self._wandb_log({"global/acc": acc, "global/loss": metrics["loss"],
                         "fair/worst10": fair["worst10"]}, round_idx)
        if self.rank == 0:
            log.info("round %d acc=%.4f (smoothed %.4f) loss=%.4f", round_idx, acc,
                     self._display_acc, metrics["loss"])  # ok: MLS306

    def flush(self):
        if self.rank != 0:
            return
        hist = pd.DataFrame(self.history)
        if len(hist):
            hist["loss"] = hist["loss"].cummin()  # ruleid: MLS306
            hist["acc_rolling"] = hist["acc"].rolling(5, min_periods=1).mean()  # ok: MLS306
        hist.to_csv(os.path.join(self.out_dir, "history.csv"), index=False)
        results = {"best_acc": self.best_acc, "best_round": self.best_round,
                   "final_acc": float(hist["acc"].iloc[-1]) if len(hist) else None}
        if results["final_acc"] is not None and results["final_acc"] < self.best_acc:
            results["final_acc"] = self.best_acc  # ruleid: MLS306
        with open(os.path.join(self.out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        if self.writer is not None:
            self.writer.flush()
