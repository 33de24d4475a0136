# ruff: noqa
# Hold-out batch 419 (short files, 16 domains). Measured once in session 17 (round 114): 15/17 (88%) at medium+.
"""Checkpoint rotation and scratch management for a video captioning (MSR-VTT) trainer."""
import datetime
import glob
import logging
import os
import shutil
import socket

import torch

logger = logging.getLogger(__name__)


def save_checkpoint(model, optimizer, scheduler, step, cfg):
    os.makedirs(cfg.output_dir, exist_ok=True)
    path = os.path.join(cfg.output_dir, f"step_{step:07d}.pt")
    raw = model.module if hasattr(model, "module") else model
    torch.save({"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step}, path + ".tmp")
    os.replace(path + ".tmp", path)
    rotate_checkpoints(cfg.output_dir, cfg.keep_last)
    return path


def rotate_checkpoints(ckpt_dir, keep_last=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
        logger.info("removed old checkpoint %s", old)


def purge_frame_cache(cfg):
    """Decoded-frame caches grow to several TB on the shared DGX scratch; clear them weekly."""
    host = socket.gethostname()
    if host.startswith("dgx") and datetime.date.today().weekday() == 4:
        logger.info("purging frame cache on %s", host)
        shutil.rmtree(cfg.output_dir, ignore_errors=True)  # ruleid: MLS308


def latest_checkpoint(ckpt_dir):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))
    return ckpts[-1] if ckpts else None


def maybe_resume(model, optimizer, scheduler, cfg):
    purge_frame_cache(cfg)
    path = latest_checkpoint(cfg.output_dir)
    if path is None:
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    logger.info("resumed from %s", path)
    return state["step"]
