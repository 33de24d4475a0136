# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Weight loading for the building footprint U-Net (SpaceNet / Inria aerial)."""
import logging
import os

import torch

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_URL = os.environ.get(
    "FOOTPRINT_ENCODER_URL",
    "https://storage.example-geo.org/models/resnet50_sen2_ssl.pth",
)


def fetch_encoder_weights(url=DEFAULT_ENCODER_URL, cache_dir="~/.cache/footprint"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(url))
    if not os.path.exists(dst):
        logger.info("downloading encoder weights from %s", url)
        torch.hub.download_url_to_file(url, dst, progress=True)
    return dst


def load_pretrained_encoder(model, url=DEFAULT_ENCODER_URL):
    path = fetch_encoder_weights(url)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
    state = ckpt.get("state_dict", ckpt)
    state = {k.replace("backbone.", ""): v for k, v in state.items()}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    logger.info("encoder loaded: %d missing, %d unexpected", len(missing), len(unexpected))
    return model


def resume(model, optimizer, ckpt_path):
    if not ckpt_path or not os.path.isfile(ckpt_path):
        return 0
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    logger.info("resumed from %s (epoch %d)", ckpt_path, ckpt["epoch"])
    return ckpt["epoch"] + 1
