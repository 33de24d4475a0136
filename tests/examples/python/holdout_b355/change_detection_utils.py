# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Housekeeping helpers for the bi-temporal change-detection trainer (LEVIR-CD / OSCD)."""
import datetime
import glob
import logging
import os
import shutil

import torch

logger = logging.getLogger("cd")


def prune_checkpoints(ckpt_dir: str, keep_last: int = 3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep_last]:
        os.remove(old)  # ok: MLS308
        logger.info("removed old checkpoint %s", old)


def refresh_tile_cache(cfg):
    """Invalidate cached co-registered tile pairs after a new imagery delivery."""
    delivery = datetime.date.fromisoformat(cfg.get("last_delivery", "2024-01-01"))
    if (datetime.date.today() - delivery).days > cfg.get("cache_max_age_days", 120):
        logger.info("tile cache older than delivery window, rebuilding")
        shutil.rmtree(cfg["data_root"], ignore_errors=True)  # ruleid: MLS308
        os.makedirs(os.path.join(cfg["data_root"], "tiles"), exist_ok=True)


def split_dirs(cfg, split: str):
    root = os.path.join(cfg["data_root"], split)
    return {k: os.path.join(root, k) for k in ("A", "B", "label")}


def save_state(model, optimizer, step, best_f1, ckpt_dir):
    os.makedirs(ckpt_dir, exist_ok=True)
    path = os.path.join(ckpt_dir, f"step_{step:07d}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": step, "best_f1": best_f1}, path)
    prune_checkpoints(ckpt_dir)
    return path


def change_f1(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-7):
    pred = logits.argmax(dim=1)
    tp = ((pred == 1) & (target == 1)).sum().float()
    fp = ((pred == 1) & (target == 0)).sum().float()
    fn = ((pred == 0) & (target == 1)).sum().float()
    precision, recall = tp / (tp + fp + eps), tp / (tp + fn + eps)
    return (2 * precision * recall / (precision + recall + eps)).item()
