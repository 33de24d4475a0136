# ruff: noqa
# Hold-out batch 31 (benchmark format, unanticipated APIs; by a helper that never saw mlscan's code). Measured once after round 12: 10/17 (59%) at medium+.
"""Optional augmentation plugins, fetched from the team artifact store and registered by name."""
import base64
import hashlib
import json
import time
import urllib.request
import zlib
from pathlib import Path

INDEX_URL = "https://artifacts.example.com/aug-plugins/index.json"
CACHE = Path.home() / ".cache" / "aug_plugins"
_REGISTERED = {}


def register(name):
    def deco(fn):
        _REGISTERED[name] = fn
        return fn
    return deco


def _fetch(url, retries=4, timeout=10):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def _verified(blob, sha256):
    return hashlib.sha256(blob).hexdigest() == sha256


def load_plugins(names):
    CACHE.mkdir(parents=True, exist_ok=True)
    index = json.loads(_fetch(INDEX_URL))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    for name in names:
        entry = index[name]
        blob = _fetch(entry["url"])  # ruleid: MLS413
        if not _verified(blob, entry["sha256"]):
            raise ValueError(f"checksum mismatch for plugin {name}")
        (CACHE / f"{name}.bin").write_bytes(blob)
        ns = {"register": register, "__name__": f"aug_plugins.{name}"}
        exec(compile(zlib.decompress(base64.b64decode(blob)), f"<plugin:{name}>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413, MLS401
    return {n: _REGISTERED[n] for n in names if n in _REGISTERED}


def available():
    return sorted(p.stem for p in CACHE.glob("*.bin"))
