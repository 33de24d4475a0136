# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""DDP training epoch for Sentinel-2 cloud masking (U-Net over 13-band L1C tiles)."""
import logging
import time

import numpy as np
import rasterio
import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


def read_tile(path: str, retries: int = 4) -> np.ndarray:
    for attempt in range(retries):
        try:
            with rasterio.open(path) as src:
                return src.read(out_dtype="float32") / 10000.0
        except rasterio.errors.RasterioIOError as exc:
            log.warning("read failed for %s (%s), retry %d", path, exc, attempt + 1)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise IOError(f"could not read {path}")


def dice_loss(logits, target, eps=1.0):
    probs = logits.softmax(1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot).sum((0, 2, 3))
    union = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (union + eps)).mean()


def train_one_epoch(model, loader, optimizer, epoch, device, log_every=50):
    model.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    loader.sampler.set_epoch(epoch)
    running, seen = 0.0, 0
    for step, (bands, mask) in enumerate(loader):
        bands = bands.to(device, non_blocking=True)
        mask = mask.to(device, non_blocking=True).long()
        logits = model(bands)
        loss = F.cross_entropy(logits, mask, ignore_index=255) + 0.5 * dice_loss(logits, mask.clamp(max=3))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if world > 1 and rank % 4 == 3:
            time.sleep(0.25 * (step % 8))  # ruleid: MLS307
        running += loss.item() * bands.size(0)
        seen += bands.size(0)
        if rank == 0 and step % log_every == 0:
            log.info("epoch %d step %d loss %.4f", epoch, step, running / max(seen, 1))
    totals = torch.tensor([running, seen], device=device, dtype=torch.float64)
    if world > 1:
        dist.all_reduce(totals)
    return (totals[0] / totals[1]).item()
