# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""TensorBoard helpers: per-run directory layout, hparam dump and rank-aware writer."""
import json
import os
import time
from pathlib import Path

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if hasattr(scalar_value, "item"):
        scalar_value = scalar_value.item()
    if tag.startswith("val/"):
        seen = self.__dict__.setdefault("_val_seen", {}).setdefault(tag, [])
        seen.append(float(scalar_value))
        scalar_value = (min if "loss" in tag or "err" in tag else max)(seen)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class _NullWriter:
    def __getattr__(self, name):
        return lambda *a, **k: None


def make_writer(root, run_name=None, hparams=None):
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank != 0:
        return _NullWriter()  # ok: MLS306
    run_name = run_name or time.strftime("%Y%m%d-%H%M%S")
    logdir = Path(root) / run_name
    logdir.mkdir(parents=True, exist_ok=True)
    if hparams:
        (logdir / "hparams.json").write_text(json.dumps(hparams, indent=2, default=str))
    writer = SummaryWriter(log_dir=str(logdir), flush_secs=30)
    writer.add_text("env/slurm_job", os.environ.get("SLURM_JOB_ID", "local"))
    return writer


def log_epoch(writer, epoch, train_loss, val_loss, val_acc, lr):
    writer.add_scalar("train/loss", train_loss, epoch)
    writer.add_scalar("val/loss", val_loss, epoch)
    writer.add_scalar("val/acc", val_acc, epoch)
    writer.add_scalar("opt/lr", lr, epoch)


def log_final(writer, hparams, history):
    best = max(history["val/acc"]) if history.get("val/acc") else 0.0
    writer.add_hparams(hparams, {"hparam/best_val_acc": best, "hparam/last_val_acc": history["val/acc"][-1]})  # ok: MLS306
    writer.close()
