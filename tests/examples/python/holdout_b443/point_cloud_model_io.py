# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Checkpoint / pretrained-weight helpers for a PointNet++ classifier on ModelNet40."""
import logging
import os
import urllib.request

import torch

logger = logging.getLogger(__name__)

PRETRAINED_URLS = {
    "pointnet2_ssg": "https://pointcloud-models.s3.amazonaws.com/pointnet2/ssg_modelnet40.pth",
    "pointnet2_msg": "https://pointcloud-models.s3.amazonaws.com/pointnet2/msg_modelnet40.pth",
}


def _cached_download(url, cache_dir="~/.cache/pointnet2"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        logger.info("downloading %s", url)
        urllib.request.urlretrieve(url, dst)
    return dst


def load_pretrained(model, arch, strict=False):
    path = _cached_download(PRETRAINED_URLS[arch])
    blob = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = blob.get("model_state_dict", blob)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    logger.info("pretrained %s: %d missing, %d unexpected keys", arch, len(missing), len(unexpected))
    return model


def save_checkpoint(path, model, optimizer, scheduler, epoch, best_acc):
    tmp = path + ".tmp"
    torch.save(
        {
            "epoch": epoch,
            "best_acc": best_acc,
            "model_state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        tmp,
    )
    os.replace(tmp, path)


def resume(path, model, optimizer, scheduler):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model_state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["epoch"] + 1, ckpt["best_acc"]
