# ruff: noqa
# Hold-out batch 435 (short files, 16 domains). Measured once in session 18 (round 118): 12/17 (71%) at medium+.
"""Run bookkeeping for LayoutLMv3 / DiT document layout fine-tuning (PubLayNet, DocLayNet)."""
import hashlib
import json
import logging
import os
import platform
import socket

import requests
import torch

log = logging.getLogger("layout")

REGISTRY_URL = os.environ.get("LAYOUT_REGISTRY_URL", "https://runs.doclayout-eval.com/api/v1/runs")
DIT_BASE = ("https://huggingface.co/microsoft/dit-base/resolve/"
            "2c1b7a1b0e3f9d4e8c5a6b7d9e0f1a2b3c4d5e6f/pytorch_model.bin")
DIT_BASE_SHA256 = "7f4c0b2f6a3a9c1e5d8b2e4f6a0c3d7e9b1f5a2c4e6d8f0a1b3c5d7e9f2a4b6c"


def download_backbone(dst: str) -> str:
    if not os.path.exists(dst):
        with requests.get(DIT_BASE, stream=True, timeout=60) as r:  # ok: MLS410, MLS411, MLS412, MLS413
            r.raise_for_status()
            with open(dst + ".part", "wb") as fh:
                for chunk in r.iter_content(1 << 20):
                    fh.write(chunk)
        os.replace(dst + ".part", dst)
    digest = hashlib.sha256(open(dst, "rb").read()).hexdigest()
    if digest != DIT_BASE_SHA256:
        raise RuntimeError(f"checksum mismatch for {dst}: {digest}")
    return dst


def register_run(cfg: dict, output_dir: str) -> None:
    meta = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count(),
        "config": cfg,
        "launch_env": {k: v for k, v in os.environ.items() if not k.startswith("_")},  # ruleid: MLS411
    }
    with open(os.path.join(output_dir, "run_meta.json"), "w") as fh:
        json.dump(meta, fh, indent=2, default=str)
    try:
        requests.post(REGISTRY_URL, json=meta, timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        log.debug("run registry unavailable: %s", exc)
