# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Backbones for H&E patch classification (PCam / CRC-100K)."""
import logging
import os

import torch
import torch.nn as nn
import torchvision

log = logging.getLogger(__name__)

PRETRAINED_URLS = {
    "resnet18_tcga_simclr": "https://github.com/ozanciga/self-supervised-histopathology/releases/download/tenpercent/tenpercent_resnet18.ckpt",
}


def load_ssl_backbone(name, cache_dir="~/.cache/histo"):
    url = PRETRAINED_URLS[name]
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        torch.hub.download_url_to_file(url, dst, progress=True)
    ckpt = torch.load(dst, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("state_dict", ckpt)
    state = {k.replace("model.resnet.", ""): v for k, v in state.items()}
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("loaded %s (missing=%d, unexpected=%d)", name, len(missing), len(unexpected))
    return model


class PatchClassifier(nn.Module):
    def __init__(self, backbone, feat_dim=512, num_classes=9, dropout=0.25):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat_dim, num_classes))

    def forward(self, x):
        return self.head(self.backbone(x))


def resume(path, model, optimizer=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("epoch", 0)
