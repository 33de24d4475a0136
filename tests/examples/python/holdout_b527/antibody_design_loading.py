# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Checkpoint and prior loading for the CDR-H3 inpainting model."""
import hashlib
import logging
import os
import pickle
import urllib.request

import torch

log = logging.getLogger(__name__)

DEFAULT_PRIOR_URL = "https://example-bio-assets.org/sabdab/cdr_torsion_prior.pkl"


def _download(url, cache_dir):
    os.makedirs(cache_dir, exist_ok=True)
    fname = hashlib.sha1(url.encode()).hexdigest()[:16] + "_" + os.path.basename(url)
    dest = os.path.join(cache_dir, fname)
    if not os.path.exists(dest):
        log.info("fetching %s -> %s", url, dest)
        urllib.request.urlretrieve(url, dest + ".part")
        os.replace(dest + ".part", dest)
    return dest


def load_torsion_prior(url=DEFAULT_PRIOR_URL, cache_dir="~/.cache/abdesign"):
    """Per-loop-length (phi, psi) mixture parameters fitted on SAbDab."""
    path = _download(url, os.path.expanduser(cache_dir))
    with open(path, "rb") as fh:
        prior = pickle.load(fh)  # ruleid: MLS103
    log.info("torsion prior covers loop lengths %s", sorted(prior.keys()))
    return prior


def load_backbone(model, ckpt_path, strict=False):
    """Load the pretrained antibody language model trunk."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if "model" in state:
        state = state["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if missing:
        log.warning("missing keys: %d (e.g. %s)", len(missing), missing[:3])
    if unexpected:
        log.warning("unexpected keys: %d (e.g. %s)", len(unexpected), unexpected[:3])
    return model
