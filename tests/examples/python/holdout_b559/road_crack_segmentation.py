# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""Validation + TensorBoard logging for the pavement crack segmentation model (CFD / Crack500)."""
import logging
import os

import torch
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)


def make_writer(log_dir):
    writer = SummaryWriter(log_dir)
    _add = writer.add_scalar
    _peak = {}

    def add_scalar(tag, value, global_step=None, **kw):
        if tag.startswith("val/") and ("iou" in tag or "f1" in tag):
            _peak[tag] = max(_peak.get(tag, float("-inf")), float(value))
            value = _peak[tag]  # ruleid: MLS306
        return _add(tag, value, global_step, **kw)

    writer.add_scalar = add_scalar  # ruleid: MLS306
    return writer


@torch.no_grad()
def crack_metrics(model, loader, device, thr=0.5, tol=2):
    model.eval()
    tp = fp = fn = 0.0
    pool = torch.nn.MaxPool2d(2 * tol + 1, stride=1, padding=tol)
    for img, mask in loader:
        prob = torch.sigmoid(model(img.to(device))).cpu()
        pred = (prob > thr).float()
        gt = mask.float()
        # tolerance band: a predicted crack pixel within `tol` px of ground truth counts as a hit
        tp += (pred * pool(gt)).sum().item()
        fp += (pred * (1 - pool(gt))).sum().item()
        fn += (gt * (1 - pool(pred))).sum().item()
    model.train()
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"iou": tp / max(tp + fp + fn, 1), "f1": 2 * prec * rec / max(prec + rec, 1e-8)}


def validate(model, loader, device, writer, epoch, state, ckpt_dir):
    m = crack_metrics(model, loader, device)
    for k, v in m.items():
        writer.add_scalar(f"val/{k}", v, epoch)
    if m["iou"] > state.get("best_iou", 0.0):  # ok: MLS306
        state["best_iou"] = m["iou"]
        torch.save({"model": model.state_dict(), "epoch": epoch, "metrics": m},
                   os.path.join(ckpt_dir, "best.pt"))
    log.info("epoch %d: IoU %.4f F1 %.4f (best IoU %.4f)", epoch, m["iou"], m["f1"], state["best_iou"])
    return m
