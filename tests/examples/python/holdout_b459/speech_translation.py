# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Checkpoint and vocabulary loading for the speech-to-text translation model."""
import logging
import os
import pickle

import torch
from torch.hub import download_url_to_file

logger = logging.getLogger(__name__)
CACHE_DIR = os.environ.get("ST_CACHE", os.path.expanduser("~/.cache/st_models"))


def _resolve(spec):
    """Return a local path for `spec`, downloading it into the cache if it is a URL."""
    if os.path.exists(spec):
        return spec
    os.makedirs(CACHE_DIR, exist_ok=True)
    dst = os.path.join(CACHE_DIR, os.path.basename(spec.split("?")[0]))
    if not os.path.exists(dst):
        logger.info("fetching %s -> %s", spec, dst)
        download_url_to_file(spec, dst, progress=False)
    return dst


def load_target_vocab(spec):
    """Target-side subword vocabulary (token -> id) exported by the preprocessing job."""
    path = _resolve(spec)
    with open(path, "rb") as f:
        vocab = pickle.load(f)  # ruleid: MLS103
    if "<pad>" not in vocab or "</s>" not in vocab:
        raise ValueError(f"vocab at {path} is missing special tokens")
    logger.info("loaded target vocab with %d entries", len(vocab))
    return vocab


def load_pretrained_encoder(model, spec, strict=False):
    """Initialise the speech encoder from an ASR checkpoint."""
    path = _resolve(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = state.get("model", state)
    enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    missing, unexpected = model.encoder.load_state_dict(enc_state, strict=strict)
    if missing:
        logger.warning("encoder init: %d missing keys (e.g. %s)", len(missing), missing[0])
    if unexpected:
        logger.warning("encoder init: %d unexpected keys", len(unexpected))
    return model
