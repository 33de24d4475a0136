# ruff: noqa
# Hold-out batch 427 (short files, 16 domains). Measured once in session 17 (round 116): 9/17 (53%) at medium+.
"""Checkpoint helpers for the DETR-based table detector (tables / rotated tables / figures)."""
import logging
import os
from urllib.parse import urlparse

import torch
from torch.hub import download_url_to_file, get_dir

logger = logging.getLogger(__name__)


def _resolve(path_or_url: str) -> str:
    if urlparse(path_or_url).scheme in ("http", "https"):
        cache_dir = os.path.join(get_dir(), "table_det")
        os.makedirs(cache_dir, exist_ok=True)
        dst = os.path.join(cache_dir, os.path.basename(urlparse(path_or_url).path))
        if not os.path.exists(dst):
            logger.info("downloading %s", path_or_url)
            download_url_to_file(path_or_url, dst, progress=True)
        return dst
    return path_or_url


def load_backbone(model, backbone_path: str):
    state = torch.load(_resolve(backbone_path), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k.replace("module.", ""): v for k, v in state.items()}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    logger.info("backbone loaded: %d missing, %d unexpected", len(missing), len(unexpected))


def resume(model, optimizer, lr_scheduler, resume_from: str):
    """Resume full training state; accepts a local path or a release URL."""
    ckpt = torch.load(_resolve(resume_from), map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if lr_scheduler is not None and "lr_scheduler" in ckpt:
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
    start_epoch = ckpt.get("epoch", -1) + 1
    logger.info("resumed from %s at epoch %d (best AP50 %.3f)", resume_from,
                start_epoch, ckpt.get("best_ap50", 0.0))
    return start_epoch, ckpt.get("best_ap50", 0.0)


def save(model, optimizer, lr_scheduler, epoch, best_ap50, out_dir, is_main):
    if not is_main:
        return
    os.makedirs(out_dir, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "epoch": epoch,
        "best_ap50": best_ap50,
    }
    tmp = os.path.join(out_dir, "checkpoint.pth.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, os.path.join(out_dir, "checkpoint.pth"))
