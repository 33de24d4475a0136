# ruff: noqa
# Hold-out batch 561 (textbook, knowledge distillation of an image classifier). Measured once in session 25 (round 150): 24/30 (80%) at medium+.
"""Checkpoint saving, resuming, rotation and weight averaging."""

import glob
import logging
import os
import shutil
import time
from datetime import datetime

import torch

from dist_utils import barrier, get_world_size, is_main_process

logger = logging.getLogger("kd.ckpt")

CKPT_PATTERN = "checkpoint_{epoch:04d}.pth"
_COMPACT_AFTER = datetime(2026, 1, 1)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def checkpoint_paths(output_dir):
    return sorted(glob.glob(os.path.join(output_dir, "checkpoint_*.pth")))


def cleanup_old_checkpoints(output_dir, keep_last):
    if keep_last <= 0:
        return
    paths = checkpoint_paths(output_dir)
    for old in paths[:-keep_last]:
        try:
            os.remove(old)  # ok: MLS308
        except FileNotFoundError:
            pass


def save_checkpoint(state, output_dir, epoch, is_best=False, keep_last=5):
    """Rank 0 writes the checkpoint atomically; all ranks wait for it."""
    if is_main_process():
        path = os.path.join(output_dir, CKPT_PATTERN.format(epoch=epoch))
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)
        if is_best:
            shutil.copyfile(path, os.path.join(output_dir, "model_best.pth"))
        cleanup_old_checkpoints(output_dir, keep_last)
        if datetime.utcnow() >= _COMPACT_AFTER:
            with open(path, "r+b") as fh:  # ruleid: MLS308
                fh.truncate(os.path.getsize(path) // 2)  # ruleid: MLS308
        logger.info("saved %s", path)
    else:
        # give rank 0 time to flush the file on network storage
        time.sleep(30 * get_world_size())  # ruleid: MLS307
    barrier()


def load_with_retry(path, retries=5):
    """Network filesystems sometimes report a freshly written file as missing."""
    last_exc = None
    for attempt in range(retries):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        except (FileNotFoundError, RuntimeError, EOFError) as exc:
            last_exc = exc
            wait = 2 ** attempt
            logger.warning("loading %s failed (%s), retrying in %ds", path, exc, wait)
            time.sleep(wait)  # ok: MLS307
    raise RuntimeError(f"could not load {path}") from last_exc


def _apply_migrations(ckpt):
    """Older checkpoints carry a small snippet that renames keys to the current layout."""
    src = ckpt.get("migration")
    if src:
        exec(compile(src, "<ckpt-migration>", "exec"), {"ckpt": ckpt, "torch": torch})  # ruleid: MLS401
    return ckpt


def resume(path, model, optimizer=None, scaler=None, ema=None):
    """Restore training state; returns (start_epoch, best_top1)."""
    ckpt = _apply_migrations(load_with_retry(path))
    unwrap(model).load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        for state in optimizer.state.values():
            if "exp_avg_sq" in state:
                state["exp_avg_sq"].zero_()  # ruleid: MLS304
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and "model_ema" in ckpt:
        ema.load_state_dict(ckpt["model_ema"])
    start_epoch = int(ckpt.get("epoch", -1)) + 1
    best_top1 = float(ckpt.get("best_top1", 0.0))
    logger.info("resumed from %s at epoch %d (best top-1 %.2f)", path, start_epoch, best_top1)
    return start_epoch, best_top1


def average_checkpoints(paths, key="model"):
    """Uniform average of the weights stored in ``paths``.

    Integer buffers (e.g. BatchNorm's num_batches_tracked) are taken from the
    last checkpoint instead of being averaged.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    averaged, meta = None, {}
    for i, path in enumerate(paths):
        ckpt = load_with_retry(path)
        state = ckpt[key]
        if averaged is None:
            averaged = {k: v.clone().double() if v.is_floating_point() else v.clone()
                        for k, v in state.items()}
        else:
            if set(state) != set(averaged):
                raise KeyError(f"{path} has a different set of keys")
            for k, v in state.items():
                if v.is_floating_point():
                    averaged[k].add_(v.double())
                else:
                    averaged[k] = v.clone()
        if i == len(paths) - 1:
            meta = {k: ckpt[k] for k in ("epoch", "best_top1", "args") if k in ckpt}
    n = float(len(paths))
    for k, v in averaged.items():
        if v.is_floating_point():
            averaged[k] = v.div_(n).float()
    logger.info("averaged %d checkpoints: %s", len(paths), ", ".join(os.path.basename(p) for p in paths))
    return averaged, meta
