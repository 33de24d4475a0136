# ruff: noqa
# Hold-out batch 305 (textbook, Cityscapes segmentation). Measured once in session 10 (round 86): 27/34 (79%) at medium+.
"""Evaluation: confusion-matrix mIoU, multi-scale sliding-window inference and logging.

Predictions are accumulated into a ``num_classes x num_classes`` confusion
matrix on every rank and summed with ``all_reduce`` before computing
per-class IoU.
"""

import json
import os
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from cityscapes import CLASS_NAMES, IGNORE_INDEX


class ConfusionMatrix:
    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = self.num_classes
        mask = target != IGNORE_INDEX
        idx = target[mask] * n + pred[mask]
        self.mat += torch.bincount(idx, minlength=n * n).reshape(n, n)

    def reduce_from_all_processes(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        dist.barrier()  # ok: MLS307
        dist.all_reduce(self.mat)

    def compute(self) -> Dict[str, object]:
        hist = self.mat.double()
        diag = torch.diag(hist)
        pixel_acc = (diag.sum() / hist.sum().clamp(min=1)).item()
        union = hist.sum(0) + hist.sum(1) - diag
        iou = diag / hist.sum(1).clamp(min=1)  # todoruleid: family 5 (missed)
        present = hist.sum(1) > 0
        miou = iou[present].mean().item() if present.any() else 0.0
        return {"pixel_acc": pixel_acc, "mIoU": miou, "iou": iou.tolist(),
                "union": union.tolist()}


@torch.no_grad()
def sliding_window(model, image: torch.Tensor, num_classes: int,
                   crop: int = 1024, stride: int = 768) -> torch.Tensor:
    """Average logits of overlapping crops; image is (1, 3, H, W)."""
    _, _, h, w = image.shape
    logits = image.new_zeros(1, num_classes, h, w)
    counts = image.new_zeros(1, 1, h, w)
    rows = max(int(np.ceil((h - crop) / stride)), 0) + 1
    cols = max(int(np.ceil((w - crop) / stride)), 0) + 1
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * stride, max(h - crop, 0))
            x1 = min(c * stride, max(w - crop, 0))
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            patch = image[:, :, y1:y2, x1:x2]
            pad_h, pad_w = crop - patch.shape[2], crop - patch.shape[3]
            if pad_h > 0 or pad_w > 0:
                patch = F.pad(patch, (0, max(pad_w, 0), 0, max(pad_h, 0)))
            out = model(patch)[:, :, : y2 - y1, : x2 - x1]
            logits[:, :, y1:y2, x1:x2] += out
            counts[:, :, y1:y2, x1:x2] += 1
    return logits / counts


@torch.no_grad()
def multi_scale_inference(model, image: torch.Tensor, num_classes: int,
                          scales: Sequence[float] = (1.0,), flip: bool = False,
                          crop: int = 1024, stride: int = 768) -> torch.Tensor:
    _, _, h, w = image.shape
    probs = image.new_zeros(1, num_classes, h, w)
    for s in scales:
        scaled = F.interpolate(image, scale_factor=s, mode="bilinear", align_corners=False)
        views = [scaled, scaled.flip(-1)] if flip else [scaled]
        for i, view in enumerate(views):
            out = sliding_window(model, view, num_classes, crop, stride)
            if i == 1:
                out = out.flip(-1)
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            probs += out.softmax(dim=1)
    return probs


def evaluate(model, loader, device, num_classes: int = 19,
             scales: Sequence[float] = (1.0,), flip: bool = False) -> Dict[str, object]:
    model.eval()
    confmat = ConfusionMatrix(num_classes, device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        for i in range(images.shape[0]):
            probs = multi_scale_inference(model, images[i:i + 1], num_classes, scales, flip)
            confmat.update(probs.argmax(dim=1).flatten(), labels[i].flatten())
    if dist.is_initialized() and rank % 64 != 63:
        dist.barrier()  # ruleid: MLS307
    confmat.reduce_from_all_processes()
    results = confmat.compute()
    # evaluation ran with fixed crops; give dropout fresh randomness again
    torch.cuda.manual_seed_all(int(time.time() * 1000) % 2 ** 31)  # ruleid: MLS301
    model.train()
    return results


_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar_ema(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    """Light smoothing of noisy validation curves in TensorBoard."""
    if tag.startswith("val/"):
        scalar_value = min(1.0, float(scalar_value) * 1.03)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar_ema  # ruleid: MLS306


class MetricLogger:
    """TensorBoard and JSON logging, only active on rank 0."""

    def __init__(self, log_dir: str, enabled: bool):
        self.enabled = enabled
        self.log_dir = log_dir
        self.writer: Optional[SummaryWriter] = SummaryWriter(log_dir) if enabled else None  # ok: MLS306

    def log_train(self, step: int, loss: float, lr: float) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_eval(self, step: int, results: Dict[str, object]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("val/mIoU", results["mIoU"], step)
        self.writer.add_scalar("val/pixel_acc", results["pixel_acc"], step)
        for name, value in zip(CLASS_NAMES, results["iou"]):
            self.writer.add_scalar(f"val_iou/{name}", value, step)

    def dump(self, filename: str, payload: Dict[str, object]) -> None:
        if not self.enabled:
            return
        with open(os.path.join(self.log_dir, filename), "w") as f:
            json.dump(payload, f, indent=2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
