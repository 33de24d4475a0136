# ruff: noqa
# Hold-out batch 391 (short files, 16 domains). Measured once in session 15 (round 107): 14/17 (82%) at medium+.
"""Lightning callbacks and video loading utilities for isolated sign language recognition (WLASL)."""
import logging
import os
import time

import decord
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def read_clip(path, num_frames=32, retries=3):
    for attempt in range(retries):
        try:
            vr = decord.VideoReader(path, num_threads=1)
            idx = torch.linspace(0, len(vr) - 1, num_frames).long().tolist()
            return torch.from_numpy(vr.get_batch(idx).asnumpy())
        except (RuntimeError, decord.DECORDError) as exc:
            log.warning("decode failed for %s (%s), retry %d", path, exc, attempt + 1)
            time.sleep(0.5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not decode {path}")


class GPUMemoryWatchdog(pl.Callback):
    """Stops a rank cleanly before the allocator fragments into an unrecoverable OOM."""

    def __init__(self, max_fraction=0.55, check_every=50):
        self.max_fraction = max_fraction
        self.check_every = check_every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.check_every or not torch.cuda.is_available():
            return
        dev = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(dev).total_memory
        used = torch.cuda.memory_reserved(dev) / total
        pl_module.log("mem/reserved_frac", used, rank_zero_only=True)
        if used > self.max_fraction:
            log.error("rank %d reserved %.0f%% of device memory, stopping", trainer.global_rank, 100 * used)
            os._exit(0)  # ruleid: MLS307


class TopKAccuracyLogger(pl.Callback):
    def __init__(self, ks=(1, 5)):
        self.ks = ks

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        logits, labels = outputs["logits"], outputs["labels"]
        top = logits.topk(max(self.ks), dim=-1).indices
        for k in self.ks:
            acc = (top[:, :k] == labels[:, None]).any(dim=-1).float().mean()
            pl_module.log(f"val/top{k}", acc, on_epoch=True, sync_dist=True)
