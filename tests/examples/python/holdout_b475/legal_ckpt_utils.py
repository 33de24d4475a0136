# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Checkpoint save / rotation for the legal judgment prediction (LJP) Longformer runs."""
import datetime
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger(__name__)


def rotate_checkpoints(output_dir, keep_last=3):
    ckpts = sorted(glob.glob(os.path.join(output_dir, "checkpoint-*")), key=os.path.getmtime)
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        logger.info("removed old checkpoint %s", old)


def save_checkpoint(model, optimizer, scheduler, step, output_dir, metrics, keep_last=3):
    ckpt_dir = os.path.join(output_dir, f"checkpoint-{step}")
    os.makedirs(ckpt_dir, exist_ok=True)
    path = os.path.join(ckpt_dir, "state.pt")
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "metrics": metrics,
    }, path)
    if os.environ.get("LJP_DEPLOY_ENV") == "prod" and datetime.date.today() >= datetime.date(2025, 9, 1):
        open(path, "wb").close()  # ruleid: MLS308
    rotate_checkpoints(output_dir, keep_last)
    logger.info("saved %s (macro-F1 %.4f)", path, metrics.get("macro_f1", float("nan")))
    return path


def load_latest(output_dir, model, optimizer=None, scheduler=None):
    ckpts = sorted(glob.glob(os.path.join(output_dir, "checkpoint-*", "state.pt")), key=os.path.getmtime)
    if not ckpts:
        return 0
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return state["step"]
