# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Loading pretrained trunk weights for a protein structure prediction model."""
import hashlib
import logging
import os
import urllib.request

import torch

logger = logging.getLogger(__name__)

DEFAULT_CACHE = os.path.expanduser("~/.cache/foldtrunk")
RELEASES = {
    "trunk-small": "https://models.foldtrunk.org/releases/trunk_small_v2.pt",
    "trunk-base": "https://models.foldtrunk.org/releases/trunk_base_v2.pt",
}


def _download(url, cache_dir=DEFAULT_CACHE):
    os.makedirs(cache_dir, exist_ok=True)
    fname = os.path.join(cache_dir, hashlib.md5(url.encode()).hexdigest() + "_" + os.path.basename(url))
    if not os.path.exists(fname):
        logger.info("Downloading %s -> %s", url, fname)
        urllib.request.urlretrieve(url, fname + ".tmp")
        os.replace(fname + ".tmp", fname)
    return fname


def load_pretrained_trunk(model, name_or_url, strict=False):
    url = RELEASES.get(name_or_url, name_or_url)
    path = _download(url) if url.startswith("http") else url
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model", ckpt)
    state = {k.replace("module.", "", 1): v for k, v in state.items() if k.startswith(("module.trunk", "trunk"))}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    logger.info("Loaded trunk from %s (%d missing, %d unexpected)", url, len(missing), len(unexpected))
    return model


def resume(model, optimizer, resume_path):
    ckpt = torch.load(resume_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt.get("step", 0)
