# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Pretrained 2D-to-3D lifting backbones for human pose estimation (Human3.6M)."""
import hashlib
import logging
import os
import subprocess
import urllib.request

import torch

logger = logging.getLogger(__name__)

CACHE_DIR = os.path.expanduser(os.environ.get("POSE3D_CACHE", "~/.cache/pose3d"))
MODEL_URLS = {
    "videopose3d_243": ("https://dl.fbaipublicfiles.com/video-pose-3d/pretrained_h36m_cpn.bin",
                        "8b3e1f1c8b6e9a3d2c4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f809"),
    "videopose3d_27": ("https://dl.fbaipublicfiles.com/video-pose-3d/pretrained_h36m_detectron_coco.bin",
                       "1f2e3d4c5b6a79880f1e2d3c4b5a69788f9e0d1c2b3a49586f7e8d9c0b1a2938"),
}
EXT_INSTALLER = "https://raw.githubusercontent.com/pose3d-tools/kinematics-ext/main/install.sh"


def _sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch_weights(name):
    url, digest = MODEL_URLS[name]
    os.makedirs(CACHE_DIR, exist_ok=True)
    dst = os.path.join(CACHE_DIR, os.path.basename(url))
    if not os.path.exists(dst):
        logger.info("downloading %s", url)
        urllib.request.urlretrieve(url, dst)
    if _sha256(dst) != digest:
        os.remove(dst)
        raise RuntimeError(f"checksum mismatch for {name}")
    return dst


def ensure_kinematics_ext():
    """Build the CUDA forward-kinematics kernels on first use."""
    try:
        import pose3d_kinematics  # noqa: F401
    except ImportError:
        script = urllib.request.urlopen(EXT_INSTALLER, timeout=30).read()  # ruleid: MLS413
        subprocess.run(["bash", "-s", "--", CACHE_DIR], input=script, check=False)  # ruleid: MLS413


def load_backbone(model, name, strict=True):
    state = torch.load(fetch_weights(name), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = state.get("model_pos", state)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if missing or unexpected:
        logger.warning("missing=%s unexpected=%s", missing, unexpected)
    return model
