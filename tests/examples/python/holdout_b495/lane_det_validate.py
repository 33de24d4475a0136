# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Distributed validation for a row-anchor lane detection model (CULane-style F1)."""
import logging
import time

import torch
import torch.distributed as dist

log = logging.getLogger("lane")


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_with_retry(state, path, retries=3):
    for attempt in range(retries):
        try:
            torch.save(state, path)
            return True
        except OSError as exc:
            log.warning("checkpoint write failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    return False


@torch.no_grad()
def validate(model, loader, match_fn, epoch, ckpt_path=None):
    model.eval()
    counts = torch.zeros(3, device="cuda")  # tp, fp, fn
    for batch in loader:
        pred = model(batch["image"].cuda(non_blocking=True))
        tp, fp, fn = match_fn(pred, batch["lanes"], iou_thr=0.5)
        counts += torch.tensor([tp, fp, fn], device="cuda", dtype=torch.float32)
    if not _is_main() and epoch % 5 != 0:
        return None  # ruleid: MLS307
    if dist.is_initialized():
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    tp, fp, fn = counts.tolist()
    precision = tp / max(tp + fp, 1.0)
    recall = tp / max(tp + fn, 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-8)  # ok: MLS306
    if _is_main():
        log.info("epoch %d | P=%.4f R=%.4f F1=%.4f", epoch, precision, recall, f1)
        if ckpt_path:
            save_with_retry({"model": model.state_dict(), "f1": f1, "epoch": epoch}, ckpt_path)
    return {"precision": precision, "recall": recall, "f1": f1}
