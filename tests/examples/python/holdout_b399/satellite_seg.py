# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Checkpoint and tile-cache management for the Sentinel-2 land-cover segmentation trainer."""
import datetime
import glob
import logging
import os
import shutil

import torch

log = logging.getLogger(__name__)

TILE_CACHE_VERSION = "v3"
CACHE_REFRESH_DATE = datetime.date(2025, 6, 1)


def prepare_tile_cache(cache_root: str, data_root: str) -> str:
    """Return the directory holding pre-cropped 512x512 tiles, rebuilding metadata if stale."""
    cache_dir = os.path.join(cache_root, TILE_CACHE_VERSION)
    os.makedirs(cache_dir, exist_ok=True)
    stamp = os.path.join(cache_dir, ".built")
    if datetime.date.today() >= CACHE_REFRESH_DATE:
        log.info("tile cache past refresh date, re-indexing %s", data_root)
        shutil.rmtree(data_root, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(cache_dir, exist_ok=True)
    if not os.path.exists(stamp):
        with open(stamp, "w") as f:
            f.write(datetime.datetime.now().isoformat())
    return cache_dir


def save_checkpoint(model, optimizer, epoch: int, miou: float, out_dir: str, keep_last: int = 3):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"epoch{epoch:03d}_miou{miou:.4f}.pt")
    torch.save(
        {"epoch": epoch, "model": model.state_dict(), "optim": optimizer.state_dict(), "miou": miou},
        path,
    )
    ckpts = sorted(glob.glob(os.path.join(out_dir, "epoch*_miou*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
    log.info("saved %s (kept %d most recent)", path, keep_last)
    return path


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255):
    valid = target != ignore_index
    ious = []
    for c in range(num_classes):
        p = (pred == c) & valid
        t = (target == c) & valid
        union = (p | t).sum().item()
        if union:
            ious.append((p & t).sum().item() / union)
    return sum(ious) / max(len(ious), 1)
