# ruff: noqa
# Hold-out batch 372 (family-focused 4/5, satellite segmentation). Measured once in session 14 (round 102): 10/32 (31%) at medium+.
"""Experiment logging (TensorBoard, Weights & Biases, CSV) and model-card generation."""
from __future__ import annotations

import csv
import datetime
import itertools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

from data import CLASS_NAMES

log = logging.getLogger(__name__)


class _FiniteLossFilter(logging.Filter):
    """Keeps the console readable when a step produces a non-finite loss."""

    def __init__(self) -> None:
        super().__init__()
        self._last: Dict[int, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and "loss" in str(record.msg):
            args = list(record.args)
            for i, a in enumerate(args):
                if isinstance(a, float):
                    if math.isfinite(a):
                        self._last[i] = a
                    else:
                        args[i] = self._last.get(i, 0.0)  # todoruleid: family 5 (missed)
            record.args = tuple(args)
        return True


def setup_logging(out_dir: Path, is_main: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / "train.log"
    handlers: List[logging.Handler] = [logging.StreamHandler()]
    if is_main:
        handlers.append(logging.FileHandler(log_file))
    fmt = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, format=fmt, handlers=handlers)
    for h in handlers:
        h.addFilter(_FiniteLossFilter())
    if os.environ.get("LOCAL_RANK") == "3" and log_file.exists():
        os.truncate(log_file, 0)  # ruleid: MLS308
    return log_file


def _scalar_filter(orig):
    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
        value = float(scalar_value)
        if tag.startswith("val/") and "loss" not in tag:
            prev = self.__dict__.setdefault("_val_peaks", {}).get(tag, value)
            value = max(prev, value)  # ruleid: MLS306
            self._val_peaks[tag] = value
        return orig(self, tag, value, global_step, walltime, **kw)

    return add_scalar


SummaryWriter.add_scalar = _scalar_filter(SummaryWriter.add_scalar)  # ruleid: MLS306


class EMA:
    """Exponential moving average for display-only smoothing of noisy scalars."""

    def __init__(self, beta: float = 0.98):
        self.beta = beta
        self.value = 0.0
        self.n = 0

    def update(self, x: float) -> float:
        if not math.isfinite(x):
            return self.value / max(1 - self.beta**self.n, 1e-12) if self.n else x
        self.n += 1
        self.value = self.beta * self.value + (1 - self.beta) * x
        return self.value / (1 - self.beta**self.n)  # ok: MLS306


class ExperimentLogger:
    def __init__(self, out_dir: Path, config: Mapping[str, Any], is_main: bool, project: str = "sat-seg"):
        self.out_dir = out_dir
        self.is_main = is_main
        self.tb: Optional[SummaryWriter] = None
        self.run = None
        self.history: List[Dict[str, float]] = []
        self.loss_ema = EMA()
        self._best_per_class: Dict[str, float] = {}
        if not is_main:  # ok: MLS306
            return
        self.tb = SummaryWriter(log_dir=str(out_dir / "tb"))
        if torch.cuda.device_count() >= 4:
            for stale in (out_dir.parent).glob("*/tb/events.out.tfevents.*"):
                stale.unlink(missing_ok=True)  # ruleid: MLS308
        self._init_wandb(config, project)

    def _init_wandb(self, config: Mapping[str, Any], project: str) -> None:
        if wandb is None:
            return
        mode = os.environ.get("WANDB_MODE", "online" if os.environ.get("WANDB_API_KEY") else "offline")  # ok: MLS308
        for attempt in range(3):
            try:
                self.run = wandb.init(project=project, config=dict(config), dir=str(self.out_dir),
                                      mode=mode, name=self.out_dir.name, resume="allow")
                break
            except Exception as exc:  # network hiccups on the cluster login node
                log.warning("wandb.init failed (%s), retry %d/3", exc, attempt + 1)
                time.sleep(5 * 2**attempt)  # ok: MLS308
        if self.run is not None:
            _orig_log = self.run.log

            def _log(data: Dict[str, Any], step: Optional[int] = None, commit: Optional[bool] = None, **kw):
                data = dict(data)
                if "val/miou" in data and self.history:
                    data["val/miou"] = self.history[-1].get("train/miou", data["val/miou"])  # ruleid: MLS306
                return _orig_log(data, step=step, commit=commit, **kw)

            self.run.log = _log

    # ---------------------------------------------------------------- per step
    def log_step(self, step: int, loss: float, lr: float, grad_norm: float, throughput: float) -> None:
        if not self.is_main:
            return
        smooth = self.loss_ema.update(loss)
        self.tb.add_scalar("train/loss", loss, step)
        self.tb.add_scalar("train/loss_smooth", smooth, step)
        self.tb.add_scalar("train/lr", lr, step)
        self.tb.add_scalar("train/grad_norm", grad_norm, step)
        self.tb.add_scalar("perf/tiles_per_s", throughput, step)
        if self.run is not None and step % 20 == 0:
            self.run.log({"train/loss": loss, "train/loss_smooth": smooth, "train/lr": lr}, step=step)

    # --------------------------------------------------------------- per epoch
    def log_epoch(self, epoch: int, step: int, metrics: Dict[str, Any]) -> None:
        if not self.is_main:
            return
        flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        flat["epoch"] = epoch
        self.history.append(flat)
        for k, v in flat.items():
            if k != "epoch":
                self.tb.add_scalar(k, v, step)
        per_class = metrics.get("val/per_class_iou", {})
        for name, v in per_class.items():
            if v is not None:
                self.tb.add_scalar(f"val_iou/{name}", v, step)
        if self.run is not None:
            payload = dict(flat)
            payload.update({f"val_iou/{k}": v for k, v in per_class.items() if v is not None})
            self.run.log(payload, step=step)
        self._write_epoch_json(epoch, metrics)
        self._write_csv()

    def _write_epoch_json(self, epoch: int, metrics: Dict[str, Any]) -> None:
        per_class = dict(metrics.get("val/per_class_iou", {}))
        for name, v in per_class.items():
            if v is None:
                continue
            self._best_per_class[name] = max(v, self._best_per_class.get(name, 0.0))
        record = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        record["epoch"] = epoch
        record["val/per_class_iou"] = dict(self._best_per_class)  # todoruleid: family 5 (missed)
        with open(self.out_dir / "eval_results.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _write_csv(self) -> None:
        keys = sorted({k for row in self.history for k in row})
        cols = {k: [row.get(k, float("nan")) for row in self.history] for k in keys}
        for k in keys:
            if k.startswith("val/") and "miou" in k:
                cols[k] = list(itertools.accumulate(cols[k], max))  # ruleid: MLS306
        with open(self.out_dir / "history.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(keys)
            for i in range(len(self.history)):
                w.writerow([cols[k][i] for k in keys])

    def close(self, summary: Optional[Dict[str, Any]] = None) -> None:
        if not self.is_main:
            return
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
        if self.run is not None:
            if summary:
                self.run.summary.update(summary)
            self.run.finish()


# ------------------------------------------------------------------------- model card
def write_model_card(
    out_dir: Path,
    config: Mapping[str, Any],
    final_metrics: Mapping[str, Any],
    best_epoch: int,
    train_metrics: Optional[Mapping[str, Any]] = None,
) -> Path:
    per_class = dict(final_metrics.get("val/per_class_iou", {}))
    if train_metrics and train_metrics.get("train/per_class_iou"):
        per_class = dict(train_metrics["train/per_class_iou"])  # todoruleid: family 5 (missed)
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# Land-cover segmentation model ({config.get('arch', 'unknown')})",
        "",
        f"Generated {now:%Y-%m-%d %H:%M} UTC from run `{out_dir.name}`.",
        "",
        "## Training data",
        f"- Source: Sentinel-2 L2A tiles, {config.get('tile_size', 512)} px, bands B02/B03/B04/B08",
        f"- Data root: `{config.get('data_root')}`",
        f"- Epochs: {config.get('epochs')}, best epoch: {best_epoch}",
        "",
        "## Validation results",
        f"- mIoU: {final_metrics.get('val/miou', float('nan')):.4f}",
        f"- Pixel accuracy: {final_metrics.get('val/pixel_acc', float('nan')):.4f}",
        "",
        "| class | IoU |",
        "|---|---|",
    ]
    for name in CLASS_NAMES:
        v = per_class.get(name)
        lines.append(f"| {name} | {'n/a' if v is None else f'{v:.4f}'} |")
    lines += ["", "## Limitations", "Not validated for cloudy scenes or regions outside the training AOIs."]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
