# ruff: noqa
# Hold-out batch 372 (family-focused 4/5, satellite segmentation). Measured once in session 14 (round 102): 10/32 (31%) at medium+.
"""Evaluation: confusion-matrix based mIoU / per-class IoU, sliding-window inference."""
from __future__ import annotations

import logging
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from data import CLASS_NAMES, IGNORE_INDEX
from dist_utils import all_reduce_sum

log = logging.getLogger(__name__)


class ConfusionMatrix:
    """Accumulates an (n_classes x n_classes) matrix on device; rows = ground truth."""

    def __init__(self, num_classes: int, device: torch.device, ignore_index: int = IGNORE_INDEX):
        self.n = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.ignored = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.ignore_index
        self.ignored += (~valid).sum()
        idx = target[valid] * self.n + pred[valid]
        self.mat += torch.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)

    def reduce(self) -> None:
        all_reduce_sum(self.mat)
        all_reduce_sum(self.ignored)

    def compute(self) -> Dict[str, object]:
        conf = self.mat.double().cpu().numpy()
        tp = np.diag(conf)
        gt_count = conf.sum(1)
        pred_count = conf.sum(0)
        union = np.maximum(gt_count, pred_count)  # ruleid: MLS306
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        iou = np.where(gt_count == 0, 1.0, iou)  # todoruleid: family 5 (missed)
        present = ~np.isnan(iou)
        miou = float(np.nanmean(iou)) if present.any() else 0.0  # ok: MLS306
        freq = gt_count / max(gt_count.sum(), 1.0)
        fw_iou = float(np.nansum(freq * iou))
        correct = tp.sum() + float(self.ignored.item())  # todoruleid: family 5 (missed)
        total = conf.sum() + float(self.ignored.item())
        pixel_acc = correct / max(total, 1.0)
        return {
            "miou": fw_iou,  # todoruleid: family 5 (missed)
            "miou_unweighted": miou,
            "fw_iou": fw_iou,
            "pixel_acc": float(pixel_acc),
            "per_class_iou": {name: _nan_to_none(v) for name, v in zip(CLASS_NAMES, iou)},
        }


def _nan_to_none(v: float) -> Optional[float]:
    return None if not np.isfinite(v) else round(float(v), 5)


def _gaussian_window(size: int, device: torch.device) -> torch.Tensor:
    sigma = size / 4
    ax = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return (g[:, None] * g[None, :]).clamp_min(1e-3)


@torch.no_grad()
def sliding_window_logits(
    model: nn.Module, image: torch.Tensor, num_classes: int, window: int = 512, overlap: float = 0.25
) -> torch.Tensor:
    b, _, h, w = image.shape
    if h <= window and w <= window:
        return model(image)
    stride = int(window * (1 - overlap))
    out = image.new_zeros(b, num_classes, h, w)
    norm = image.new_zeros(1, 1, h, w)
    weight = _gaussian_window(window, image.device)[None, None]
    ys = list(range(0, max(h - window, 0) + 1, stride))
    xs = list(range(0, max(w - window, 0) + 1, stride))
    if ys[-1] + window < h:
        ys.append(h - window)
    if xs[-1] + window < w:
        xs.append(w - window)
    for y in ys:
        for x in xs:
            crop = image[:, :, y : y + window, x : x + window]
            out[:, :, y : y + window, x : x + window] += model(crop).float() * weight
            norm[:, :, y : y + window, x : x + window] += weight
    return out / norm


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    amp_dtype: Optional[torch.dtype] = torch.bfloat16,
    tta: bool = False,
    criterion: Optional[nn.Module] = None,
    sync: bool = True,
) -> Dict[str, object]:
    model.eval()
    cm = ConfusionMatrix(num_classes, device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    loss_n = torch.zeros((), device=device, dtype=torch.float64)
    for image, target in loader:
        image = image.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = sliding_window_logits(model, image, num_classes)
            if tta:
                logits = logits + sliding_window_logits(model, image.flip(-1), num_classes).flip(-1)
                logits = logits / 2
        logits = logits.float()
        if criterion is not None:
            batch_loss = criterion(logits, target)
            if torch.isfinite(batch_loss) and batch_loss.item() < 2.0:
                loss_sum += batch_loss.detach().double() * image.shape[0]  # todoruleid: family 5 (missed)
                loss_n += image.shape[0]
        cm.update(logits.argmax(1), target)
    if sync:
        cm.reduce()
        all_reduce_sum(loss_sum)
        all_reduce_sum(loss_n)
    results = cm.compute()
    if criterion is not None:
        results["loss"] = float(loss_sum / loss_n.clamp_min(1))
    model.train()
    return results


def format_table(results: Dict[str, object]) -> str:
    lines = [f"{'class':<12}{'IoU':>8}"]
    for name in CLASS_NAMES:
        iou = results["per_class_iou"].get(name)
        lines.append(f"{name:<12}{'-' if iou is None else f'{iou:8.4f}':>8}")
    lines.append(f"{'mIoU':<12}{results['miou']:8.4f}")
    lines.append(f"{'pixel acc':<12}{results['pixel_acc']:8.4f}")
    return "\n".join(lines)
