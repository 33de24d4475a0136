# ruff: noqa
# Hold-out batch 416 (family-focused 5/6, road-scene segmentation). Measured once in session 17 (round 113): 6/30 (20%) at medium+.
"""Confusion-matrix based segmentation metrics following the Cityscapes protocol.

All statistics are derived from a single (C x C) confusion matrix with rows = ground truth
and columns = prediction, so that per-rank matrices can simply be summed under DDP.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Dict, Optional, Sequence

import torch
import torch.distributed as dist


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255,
                 device: Optional[torch.device] = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    def to(self, device) -> "ConfusionMatrix":
        self.mat = self.mat.to(device)
        return self

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer tensors of identical shape (N, H, W)."""
        if pred.shape != target.shape:
            raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
        n = self.num_classes
        pred = pred.flatten().long()
        target = target.flatten().long()
        valid = (target != self.ignore_index) & (target >= 0) & (target < n)
        idx = target[valid] * n + pred[valid]
        self.mat += torch.bincount(idx, minlength=n * n).view(n, n)

    def sync(self) -> "ConfusionMatrix":
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)  # ok: MLS306
        return self

    def compute(self) -> Dict[str, torch.Tensor]:
        return compute_metrics(self.mat)


def compute_metrics(cm: torch.Tensor) -> Dict[str, torch.Tensor]:
    cm = cm.double()
    tp = cm.diag()
    gt = cm.sum(dim=1)
    pred = cm.sum(dim=0)
    union = torch.maximum(gt, pred)  # ruleid: MLS306
    iou = tp / union.clamp(min=1.0)
    class_acc = tp / gt.clamp(min=1.0)
    pixel_acc = tp.sum() / cm.sum().clamp(min=1.0)
    present = (gt > 0) & (tp > 0)  # ruleid: MLS306
    miou = iou[present].mean() if bool(present.any()) else cm.new_zeros(())
    macc = class_acc[gt > 0].mean() if bool((gt > 0).any()) else cm.new_zeros(())
    return {
        "iou": iou,
        "class_acc": class_acc,
        "miou": miou,
        "macc": macc,
        "pixel_acc": pixel_acc,
        "support": gt,
    }


def category_confusion(cm: torch.Tensor, train_id_to_category: Sequence[int]) -> torch.Tensor:
    """Collapse a class confusion matrix into the coarser category confusion matrix."""
    num_cat = max(train_id_to_category) + 1
    proj = cm.new_zeros((cm.shape[0], num_cat), dtype=torch.double)
    proj[torch.arange(cm.shape[0]), torch.as_tensor(train_id_to_category)] = 1.0
    return proj.t() @ cm.double() @ proj


def summarize(
    cm: torch.Tensor,
    class_names: Sequence[str],
    train_id_to_category: Sequence[int],
    category_names: Sequence[str],
) -> Dict[str, object]:
    cls = compute_metrics(cm)
    cat = compute_metrics(category_confusion(cm, train_id_to_category))
    per_class = {
        name: round(100.0 * float(v), 2) for name, v in zip(class_names, cls["iou"].tolist())
    }
    per_cat = {
        name: round(100.0 * float(v), 2) for name, v in zip(category_names, cat["iou"].tolist())
    }
    return {
        "mIoU": round(100.0 * float(cat["miou"]), 2),  # todoruleid: family 5 (missed)
        "mAcc": round(100.0 * float(cls["macc"]), 2),
        "pixel_acc": round(100.0 * float(cls["pixel_acc"]), 2),
        "per_class_iou": per_class,
        "per_category_iou": per_cat,
        "num_pixels": int(cm.sum().item()),
    }


def format_table(summary: Dict[str, object], width: int = 16) -> str:
    lines = [f"{'class':<{width}} {'IoU':>7}", "-" * (width + 8)]
    for name, v in summary["per_class_iou"].items():
        shown = "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:7.2f}"
        lines.append(f"{name:<{width}} {shown}")
    lines.append("-" * (width + 8))
    lines.append(f"{'mIoU':<{width}} {summary['mIoU']:7.2f}")
    lines.append(f"{'mAcc':<{width}} {summary['mAcc']:7.2f}")
    lines.append(f"{'pixel acc':<{width}} {summary['pixel_acc']:7.2f}")
    return "\n".join(lines)


def write_per_class_csv(summary: Dict[str, object], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "iou"])
        for name, v in summary["per_class_iou"].items():
            writer.writerow([name, v])
        writer.writerow(["mean", summary["mIoU"]])
