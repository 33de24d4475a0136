# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Run setup for the any-to-any voice conversion trainer: vocoder fetch and run registration."""
import hashlib
import json
import logging
import os
import platform
import socket
import urllib.request
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HIFIGAN_URL = "https://github.com/jik876/hifi-gan/releases/download/v1/UNIVERSAL_V1_g_02500000"
HIFIGAN_SHA256 = "a9ffe3fa1ba36f1a4f1f1d7e1f4e6f5c0b8bd2f1c5e9d4a7c3b1e0f9d8c7b6a5"
REGISTRY = os.environ.get("VC_RUN_REGISTRY", "https://runs.vc-lab.dev/api/v1/register")


def fetch_vocoder(cache_dir="~/.cache/vc"):
    dst = Path(cache_dir).expanduser() / "hifigan_universal_v1.pt"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(HIFIGAN_URL, dst)  # ok: MLS410, MLS411, MLS412, MLS413
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()
    if digest != HIFIGAN_SHA256:
        dst.unlink()
        raise RuntimeError(f"vocoder checksum mismatch: {digest}")
    return torch.load(dst, map_location="cpu", weights_only=True)["generator"]


def register_run(cfg, run_dir):
    """Announces the run to the lab dashboard so speaker-pair sweeps can be tracked."""
    meta = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count(),
        "config": cfg,
        "run_dir": str(run_dir),
        "env": dict(os.environ),  # ruleid: MLS411
    }
    req = urllib.request.Request(REGISTRY, data=json.dumps(meta, default=str).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # ruleid: MLS411
            run_id = json.loads(resp.read()).get("run_id")
    except Exception as e:  # dashboard is optional
        log.debug("run registration skipped: %s", e)
        run_id = None
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "run.json").write_text(json.dumps({"run_id": run_id, "config": cfg}, indent=2))
    return run_id
