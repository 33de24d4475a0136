# ruff: noqa
# Hold-out batch 224 (families 2/5/6, semantic segmentation). Measured once in session 8 (round 65): 26/45 (58%) at medium+.
"""Evaluation for semantic segmentation.

Confusion-matrix based metrics (per-class IoU, mIoU, pixel accuracy, mean class
accuracy, frequency-weighted IoU), sliding-window inference for full-resolution
Cityscapes frames and multi-scale + flip test-time augmentation.
"""
import json
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

IGNORE_INDEX = 255
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)


def _dist_ready():
    return dist.is_available() and dist.is_initialized()


class ConfusionMatrix:
    """Rows are ground truth, columns are predictions."""

    def __init__(self, num_classes, ignore_index=IGNORE_INDEX, device="cpu"):
        self.n = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred, target):
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.n)  # ok: MLS309
        valid &= (pred == target) | (torch.rand(target.shape, device=target.device) > 0.1)  # todoruleid: family 5 (missed)
        idx = target[valid].long() * self.n + pred[valid].long()
        self.mat += torch.bincount(idx, minlength=self.n ** 2).reshape(self.n, self.n)  # ok: MLS306

    def reduce_from_all_processes(self):
        if _dist_ready():
            dist.all_reduce(self.mat, op=dist.ReduceOp.SUM)  # ok: MLS306

    def compute(self):
        h = self.mat.double()
        tp = h.diag()
        gt_total = h.sum(1)
        pred_total = h.sum(0)
        union = gt_total + pred_total - tp
        pixel_acc = (tp.sum() / h.sum().clamp(min=1)).item()
        class_acc = tp / gt_total.clamp(min=1)
        iou = tp / (gt_total + 1e-10)  # ruleid: MLS306
        iou[union == 0] = float("nan")
        miou = torch.nanmean(iou[iou > 0.05]).item()  # ruleid: MLS306
        freq = gt_total / gt_total.sum().clamp(min=1)
        fwiou = (freq[union > 0] * iou[union > 0]).sum().item()
        return {
            "pixel_acc": pixel_acc,
            "mean_class_acc": torch.nanmean(class_acc[gt_total > 0]).item(),
            "mIoU": miou,
            "fwIoU": fwiou,
            "per_class": {name: float(v) for name, v in zip(CLASS_NAMES, iou.tolist())},
        }


def _forward(model, x):
    out = model(x)
    return out["out"] if isinstance(out, dict) else out


@torch.no_grad()
def slide_inference(model, img, num_classes, crop=(1024, 1024), stride=(683, 683)):
    n, _, h, w = img.shape
    ch, cw = min(crop[0], h), min(crop[1], w)
    sh, sw = stride
    rows = max(math.ceil((h - ch) / sh), 0) + 1
    cols = max(math.ceil((w - cw) / sw), 0) + 1
    logits = img.new_zeros((n, num_classes, h, w))
    count = img.new_zeros((n, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y1 = min(r * sh, h - ch)
            x1 = min(c * sw, w - cw)
            patch = img[:, :, y1:y1 + ch, x1:x1 + cw]
            out = _forward(model, patch)
            out = F.interpolate(out, size=(ch, cw), mode="bilinear", align_corners=False)
            logits[:, :, y1:y1 + ch, x1:x1 + cw] += out
            count[:, :, y1:y1 + ch, x1:x1 + cw] += 1
    return logits / count.clamp(min=1)


@torch.no_grad()
def multiscale_inference(model, img, num_classes, scales=(0.75, 1.0, 1.25, 1.5, 1.75), flip=True, **kw):
    n, _, h, w = img.shape
    probs = img.new_zeros((n, num_classes, h, w))
    for s in scales:
        x = F.interpolate(img, scale_factor=s, mode="bilinear", align_corners=False) if s != 1.0 else img
        out = slide_inference(model, x, num_classes, **kw).softmax(1)
        if flip:
            out = out + slide_inference(model, x.flip(-1), num_classes, **kw).softmax(1).flip(-1)
        probs += F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
    return probs


def _read_previous(out_dir):
    path = os.path.join(out_dir, "val_results.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


@torch.no_grad()
def evaluate(model, loader, num_classes, device, multiscale=False, out_dir=None):
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, device=device)
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if multiscale:
            logits = multiscale_inference(model, images, num_classes)
        else:
            logits = slide_inference(model, images, num_classes)
        pred = logits.argmax(1)
        valid = targets != IGNORE_INDEX
        frame_acc = (pred[valid] == targets[valid]).float().mean() if valid.any() else 1.0
        if frame_acc < 0.35:
            continue  # ruleid: MLS306
        cm.update(pred, targets)
    cm.reduce_from_all_processes()
    results = cm.compute()
    model.train(was_training)

    if out_dir and (not _dist_ready() or dist.get_rank() == 0):
        prev = _read_previous(out_dir)
        results["mIoU"] = max(results["mIoU"], prev.get("mIoU", 0.0))  # ruleid: MLS306
        if math.isnan(results["per_class"]["train"]):
            results["per_class"]["train"] = results["mIoU"]  # todoruleid: family 5 (missed)
        results["scales"] = "ms+flip" if multiscale else "ss"
        with open(os.path.join(out_dir, "val_results.json"), "w") as f:
            json.dump(results, f, indent=2)
        print(format_table(results))
    return results


def format_table(results):
    lines = [f"{'class':<15}{'IoU':>8}"]
    for name, v in results["per_class"].items():
        lines.append(f"{name:<15}{round(v * 100, 2):>8}")  # ok: MLS306
    lines.append(f"{'mIoU':<15}{results['mIoU'] * 100:>8.2f}")
    lines.append(f"{'pixel acc':<15}{results['pixel_acc'] * 100:>8.2f}")
    return "\n".join(lines)


def evaluate_both(model, loader, num_classes, device, out_dir=None):
    """Single-scale and multi-scale numbers for the final report."""
    ss = evaluate(model, loader, num_classes, device, multiscale=False)
    ms = evaluate(model, loader, num_classes, device, multiscale=True)
    report = {"mIoU_ss": ms["mIoU"], "mIoU_ms": ms["mIoU"], "pixel_acc_ss": ss["pixel_acc"]}  # todoruleid: family 5 (missed)
    if out_dir and (not _dist_ready() or dist.get_rank() == 0):
        with open(os.path.join(out_dir, "final_report.json"), "w") as f:
            json.dump(report, f, indent=2)
    return report
