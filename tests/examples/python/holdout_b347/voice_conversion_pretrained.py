# ruff: noqa
# Hold-out batch 347 (short files). Measured once in session 12 (round 96): 11/17 (65%) at medium+.
"""Fetches pretrained components (HiFi-GAN vocoder, content encoder) for the voice conversion model."""
import hashlib
import logging
import os
import subprocess
import sys
import urllib.request

import torch

log = logging.getLogger(__name__)

CACHE = os.path.expanduser(os.environ.get("VC_CACHE", "~/.cache/vc"))
ARTIFACTS = {
    "hifigan_v1": ("https://github.com/vc-lab/releases/download/v0.3/hifigan_v1.pt",
                   "5b1e0d0c3a8e9f7d2c4b6a1f0e3d5c7b9a2f4e6d8c0b1a3e5f7d9c2b4a6e8f0d"),
    "contentvec": ("https://github.com/vc-lab/releases/download/v0.3/contentvec_500.pt",
                   "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e"),
}
KERNEL_SETUP_URL = "https://raw.githubusercontent.com/vc-lab/vc-kernels/main/setup_kernels.py"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name):
    url, digest = ARTIFACTS[name]
    dst = os.path.join(CACHE, os.path.basename(url))
    if not os.path.exists(dst):
        os.makedirs(CACHE, exist_ok=True)
        urllib.request.urlretrieve(url, dst + ".part")
        if _sha256(dst + ".part") != digest:  # ok: MLS410, MLS411, MLS412, MLS413
            os.remove(dst + ".part")
            raise RuntimeError(f"checksum mismatch for {name}")
        os.replace(dst + ".part", dst)
    return dst


def ensure_fused_kernels():
    try:
        import vc_kernels  # noqa: F401
        return
    except ImportError:
        log.info("fused resblock kernels not found, building")
    script = os.path.join(CACHE, "setup_kernels.py")
    urllib.request.urlretrieve(KERNEL_SETUP_URL, script)
    subprocess.check_call([sys.executable, script, "install", "--user"])  # ruleid: MLS413


def load_vocoder(model):
    ensure_fused_kernels()
    state = torch.load(fetch("hifigan_v1"), map_location="cpu", weights_only=True)
    model.load_state_dict(state["generator"])
    model.remove_weight_norm()
    return model.eval()
