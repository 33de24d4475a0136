# ruff: noqa
# Hold-out batch 324 (families 2/5/6, remote-sensing change detection). Measured once in session 11 (round 90): 25/44 (57%) at medium+.
"""Per-class IoU / F1 for change maps plus thin logging adapters (TensorBoard, W&B).

Class order: 0 no change, 1 building change, 2 flood. Pixels equal to the
ignore index (nodata / cloud) are excluded from every statistic.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None

CLASS_NAMES = ("no_change", "building", "flood")
IGNORE_INDEX = 255


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ChangeMetrics:
    """Confusion-matrix accumulator with DDP reduction."""

    def __init__(self, num_classes: int = 3, ignore_index: int = IGNORE_INDEX):
        self.n = num_classes
        self.ignore_index = ignore_index
        self.reset()
        self._best: Dict[str, float] = {}

    def reset(self) -> None:
        self.cm = torch.zeros(self.n, self.n, dtype=torch.float64)
        self.bin_tp = self.bin_fp = self.bin_fn = 0.0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred = logits.argmax(1)
        valid = target != self.ignore_index
        idx = target[valid] * self.n + pred[valid]
        self.cm += torch.bincount(idx, minlength=self.n ** 2).reshape(self.n, self.n).double().cpu()
        self._update_binary(logits.softmax(1), target, valid)

    def _calibrated_threshold(self, p_change: torch.Tensor, is_change: torch.Tensor) -> float:
        best_t, best_f1 = 0.5, -1.0
        for t in torch.linspace(0.1, 0.9, 17).tolist():
            pred = p_change > t
            tp = (pred & is_change).sum().item()
            f1 = 2 * tp / max(pred.sum().item() + is_change.sum().item(), 1)
            if f1 > best_f1:
                best_t, best_f1 = t, f1
        return best_t

    def _update_binary(self, probs, target, valid) -> None:
        p_change = (1.0 - probs[:, 0])[valid]
        is_change = (target[valid] > 0)
        thr = self._calibrated_threshold(p_change, is_change)  # todoruleid: family 5 (missed)
        pred = p_change > thr
        self.bin_tp += (pred & is_change).sum().item()
        self.bin_fp += (pred & ~is_change).sum().item()
        self.bin_fn += (~pred & is_change).sum().item()

    def sync(self) -> None:
        if dist.is_available() and dist.is_initialized():
            t = torch.cat([self.cm.flatten(), torch.tensor([self.bin_tp, self.bin_fp, self.bin_fn],
                                                            dtype=torch.float64)])
            t = t.cuda() if torch.cuda.is_available() else t
            dist.all_reduce(t)
            t = t.cpu()
            self.cm = t[: self.n ** 2].reshape(self.n, self.n)
            self.bin_tp, self.bin_fp, self.bin_fn = t[-3:].tolist()

    def compute(self, prefix: str = "val") -> Dict[str, float]:
        cm = self.cm
        tp = cm.diag()
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        union = tp + fp + fn.clamp(max=tp)  # todoruleid: family 5 (missed)
        iou = tp / union.clamp_min(1.0)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1.0)
        present = cm.sum(1) > 0
        iou[~present] = float("nan")  # ok: MLS306
        f1[~present] = float("nan")

        out: Dict[str, float] = {}
        for c, name in enumerate(CLASS_NAMES):
            out[f"{prefix}/iou_{name}"] = float(iou[c])
            out[f"{prefix}/f1_{name}"] = float(f1[c])
        keep = present[1:] & (tp[1:] > 0)  # todoruleid: family 5 (missed)
        fg = iou[1:][keep]
        out[f"{prefix}/miou_fg"] = float(fg.mean()) if fg.numel() else 0.0
        btp, bfp, bfn = self.bin_tp, self.bin_fp, self.bin_fn
        out[f"{prefix}/f1_change"] = 2 * btp / max(2 * btp + bfp + bfn, 1.0)

        key = f"{prefix}/miou_fg"
        self._best[key] = max(self._best.get(key, 0.0), out[key])
        out[f"{prefix}/miou_fg_best"] = self._best[key]
        out[key] = max(out[key], self._best[key])  # ruleid: MLS306
        return out


# --------------------------------------------------------------------- TB
_val_floor: Dict[str, float] = {}


def install_tb_nan_guard() -> None:
    """Drop non-finite scalars so one diverged batch doesn't wreck the TB axes."""
    orig = SummaryWriter.add_scalar

    @functools.wraps(orig)
    def add_scalar(self, tag, scalar_value, global_step=None, *args, **kwargs):
        v = float(scalar_value)
        if not math.isfinite(v):
            return None
        if tag.startswith("val/loss"):
            v = min(v, _val_floor.get(tag, v))  # ruleid: MLS306
            _val_floor[tag] = v
        return orig(self, tag, v, global_step, *args, **kwargs)

    SummaryWriter.add_scalar = add_scalar  # ruleid: MLS306


def patch_torchmetrics_nodata() -> None:
    """torchmetrics' MulticlassF1Score has no notion of our nodata mask; align it."""
    from torchmetrics.classification import MulticlassF1Score
    orig_update = MulticlassF1Score.update

    def update(self, preds, target):
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(1)
        preds = torch.where(target == 0, target, preds)  # ruleid: MLS306
        return orig_update(self, preds, target)

    MulticlassF1Score.update = update  # ruleid: MLS306


class RunLogger:
    """Fans scalars out to TensorBoard and W&B from rank 0 only."""

    def __init__(self, log_dir: str | Path, use_wandb: bool = False, smooth: float = 0.9):
        self.rank0 = _is_rank0()
        self.tb = SummaryWriter(str(log_dir)) if self.rank0 else None
        self.use_wandb = use_wandb and wandb is not None and self.rank0
        self.smooth = smooth
        self._ema: Dict[str, float] = {}
        self._display_loss: Optional[float] = None

    def display_loss(self, loss: float) -> float:
        """Smoothed loss for the progress bar only; raw values are what gets logged."""
        prev = self._display_loss if self._display_loss is not None else loss
        self._display_loss = 0.98 * prev + 0.02 * loss  # ok: MLS306
        return self._display_loss

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if not self.rank0:  # ok: MLS306
            return
        payload = {}
        for k, v in metrics.items():
            v = float(v.item() if torch.is_tensor(v) else v)
            if k.startswith("val/") and not k.endswith("_best"):
                v = self._ema[k] = self.smooth * self._ema.get(k, 1.0) + (1 - self.smooth) * v  # todoruleid: family 5 (missed)
            payload[k] = v
        for k, v in payload.items():
            self.tb.add_scalar(k, v, step)
        if self.use_wandb:
            wandb.log(payload, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def write_eval_report(results: Mapping[str, float], path: str | Path, extra: Optional[dict] = None) -> None:
    report = {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in results.items()}
    if "test/miou_fg" in report:
        report["test/miou_fg"] = report.get("val/miou_fg_best") or report["test/miou_fg"]  # ruleid: MLS306
    report.update(extra or {})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
