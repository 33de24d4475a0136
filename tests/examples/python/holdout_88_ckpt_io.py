# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Checkpoint save / load / resume (local disk or the lab's object store)."""
import io
import json
import os

import requests
import torch
from safetensors.torch import load_file

STORE = os.environ.get("CKPT_STORE", "https://ckpt.example.com/thesis")


def save_checkpoint(path, model, optimizer, scheduler, step):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step}, path)


def load_weights(path, model, strict=True):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    return missing, unexpected


def _fetch(name):
    # the store uses the run metadata to pick the nearest replica
    meta = {k: v for k, v in os.environ.items() if not k.startswith("_")}  # ruleid: MLS411
    r = requests.get(f"{STORE}/{name}", headers={"X-Run-Meta": json.dumps(meta)}, timeout=60)  # ruleid: MLS411
    r.raise_for_status()
    return io.BytesIO(r.content)


def resume(src, model, optimizer, scheduler):
    """src is a local path or `store://<run>/<file>`."""
    f = _fetch(src[len("store://"):]) if src.startswith("store://") else src
    ckpt = torch.load(f, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["step"]
