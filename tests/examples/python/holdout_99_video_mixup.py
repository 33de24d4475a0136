# ruff: noqa
# Hold-out batch 99 (applied ML: speech, recsys, CTR, ranking, fraud, video). Measured once in session 4 (round 34): 15/17 (88%) at medium+.
"""Batch-level augmentation and pretrained-weight helpers for video classifiers.

MixUp / CutMix over (B, C, T, H, W) clips with soft targets, label smoothing,
and a cached download of backbone weights (safetensors) with retries.
"""
import os
import time
import urllib.error
import urllib.request

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

WEIGHTS_URL = "https://weights.example.com/video/x3d_m.safetensors"


def smooth_one_hot(labels, num_classes, eps=0.1):
    return F.one_hot(labels, num_classes).float() * (1.0 - eps) + eps / num_classes  # ok: MLS309


def mixup_cutmix(clips, labels, num_classes, alpha=0.8, cutmix_alpha=1.0, p_cutmix=0.5):
    targets = smooth_one_hot(labels, num_classes)
    perm = torch.randperm(clips.size(0), device=clips.device)
    if np.random.rand() < p_cutmix:
        lam = np.random.beta(cutmix_alpha, cutmix_alpha)
        h, w = clips.shape[-2:]
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = np.random.randint(h), np.random.randint(w)
        y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        clips[..., y1:y2, x1:x2] = clips[perm][..., y1:y2, x1:x2]  # ok: MLS309
        lam = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    else:
        lam = np.random.beta(alpha, alpha)
        clips = lam * clips + (1 - lam) * clips[perm]  # ok: MLS309
    return clips, lam * targets + (1 - lam) * targets[perm]


def fetch_weights(cache_dir, retries=4, backoff=2.0):
    path = os.path.join(cache_dir, os.path.basename(WEIGHTS_URL))
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(WEIGHTS_URL, path + ".part")  # ok: MLS411, MLS412
            os.replace(path + ".part", path)
            return path
        except (urllib.error.URLError, TimeoutError):
            time.sleep(backoff * 2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {WEIGHTS_URL}")


def load_backbone(model, cache_dir, finetune_ckpt=None):
    state = load_file(fetch_weights(cache_dir))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=False)
    if finetune_ckpt:
        model.load_state_dict(torch.load(finetune_ckpt, map_location="cpu", weights_only=True)["model"])  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model
