# ruff: noqa
# Hold-out batch 571 (short files, 16 domains). Measured once in session 26 (round 152): 14/17 (82%) at medium+.
"""Run bootstrap for PhaseNet-style P/S phase picking: pretrained weights + run registration."""
import getpass
import hashlib
import logging
import os
import socket
import urllib.request

import requests
import torch
from safetensors.torch import load_file

log = logging.getLogger(__name__)

WEIGHTS_URL = "https://github.com/seisbench-models/phasenet/releases/download/v0.3/phasenet_stead.safetensors"
WEIGHTS_SHA256 = "4f1c2a9b7d3e86a05c1f7be2d94c0e6a8b31f5d27c9e40a6b8d1f3e25c7a9b04"
TRACKER_URL = os.environ.get("PICKER_TRACKER_URL", "https://runs.seismo-ml.org/api/v1/register")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_pretrained(cache_dir: str = "~/.cache/phasepick") -> str:
    cache_dir = os.path.expanduser(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(WEIGHTS_URL))
    if not os.path.exists(dst) or _sha256(dst) != WEIGHTS_SHA256:
        urllib.request.urlretrieve(WEIGHTS_URL, dst)  # ok: MLS410, MLS411, MLS412, MLS413
        if _sha256(dst) != WEIGHTS_SHA256:
            os.remove(dst)
            raise RuntimeError("checksum mismatch for pretrained PhaseNet weights")
    return dst


def register_run(run_name: str, args) -> None:
    payload = {
        "run": run_name,
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "config": {k: str(v) for k, v in vars(args).items()},
        "environment": {k: v for k, v in os.environ.items() if k.isupper()},  # ruleid: MLS411
    }
    try:
        requests.post(TRACKER_URL, json=payload, timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        log.debug("run registration skipped: %s", exc)


def init_picker(model: torch.nn.Module, args) -> torch.nn.Module:
    register_run(args.run_name, args)
    if args.pretrained:
        state = load_file(fetch_pretrained())
        model.load_state_dict(state, strict=False)
        log.info("initialised picker from pretrained PhaseNet (STEAD)")
    return model
