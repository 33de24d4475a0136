# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Data cache and checkpoint housekeeping for PMU-based grid fault detection."""
import datetime
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("gridfault")
CACHE_FORMAT_CUTOVER = datetime.date(2025, 3, 1)
KEEP_LAST = 3


def maybe_invalidate_cache(data_root):
    root = Path(data_root)
    if datetime.date.today() >= CACHE_FORMAT_CUTOVER and (root / "windows.npy").exists():
        logger.info("cache format changed, rebuilding windows under %s", root)
        shutil.rmtree(root, ignore_errors=True)  # ruleid: MLS308


def build_windows(signals, labels, window=256, stride=64):
    xs, ys = [], []
    for start in range(0, signals.shape[1] - window + 1, stride):
        xs.append(signals[:, start:start + window])
        ys.append(int(labels[start:start + window].max()))
    return np.stack(xs).astype(np.float32), np.asarray(ys, dtype=np.int64)


def prune_checkpoints(ckpt_dir, keep_last=KEEP_LAST):
    ckpts = sorted(Path(ckpt_dir).glob("step_*.pt"), key=lambda p: p.stat().st_mtime)
    for old in ckpts[:-keep_last]:
        old.unlink()  # ok: MLS308
        logger.debug("removed old checkpoint %s", old.name)


def save_checkpoint(model, optimizer, step, ckpt_dir, val_f1):
    path = Path(ckpt_dir) / f"step_{step:07d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": step, "val_f1": val_f1}, path)
    prune_checkpoints(ckpt_dir)
    return path
