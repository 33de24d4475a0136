# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""SSL front-end + graph-attention back-end for spoofed speech detection (ASVspoof)."""
import logging
import os

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)
XLSR_URL = "https://dl.fbaipublicfiles.com/fairseq/wav2vec/xlsr2_300m.pt"


class SpoofDetector(nn.Module):
    def __init__(self, frontend, feat_dim=1024, hidden=128, n_classes=2):
        super().__init__()
        self.frontend = frontend
        self.proj = nn.Linear(feat_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.att = nn.MultiheadAttention(hidden, num_heads=4, batch_first=True)
        self.cls = nn.Linear(hidden, n_classes)

    def forward(self, wav):
        feats = self.frontend(wav)                    # (B, T, feat_dim)
        x = torch.relu(self.bn(self.proj(feats).transpose(1, 2)).transpose(1, 2))
        x, _ = self.att(x, x, x)
        return self.cls(x.mean(dim=1))


def load_frontend_weights(model, url=XLSR_URL, cache_dir="~/.cache/antispoof"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        logger.info("downloading %s", url)
        torch.hub.download_url_to_file(url, dst, progress=True)
    ckpt = torch.load(dst, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt)
    missing, unexpected = model.frontend.load_state_dict(state, strict=False)
    logger.info("frontend: %d missing, %d unexpected keys", len(missing), len(unexpected))
    return model


def resume(model, optimizer, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("epoch", 0) + 1, ckpt.get("best_eer", 1.0)
