# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Checkpoint save/load helpers with atomic writes, rotation and preemption support."""
import glob
import os
import signal
import sys

import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel


def load_run_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def atomic_save(obj, path):
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)  # ok: MLS308


def rotate(ckpt_dir, keep=3):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")), key=os.path.getmtime)
    for old in ckpts[:-keep]:
        os.remove(old)  # ok: MLS308


def save(model, optimizer, step, ckpt_dir):
    if not dist.is_initialized() or dist.get_rank() == 0:  # ok: MLS308
        atomic_save({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": step},
                    os.path.join(ckpt_dir, f"step_{step:08d}.pt"))
        save_file(model.state_dict(), os.path.join(ckpt_dir, "latest.safetensors"))
        rotate(ckpt_dir)
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def resume(model, optimizer, path, device="cpu"):
    state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    return state["step"]


def load_weights_only(model, path):
    model.load_state_dict(load_file(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model


def load_hf_backbone(name, revision):
    cfg = AutoConfig.from_pretrained(name, revision=revision)
    return AutoModel.from_pretrained(name, config=cfg, revision=revision, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def install_preemption_handler(model, optimizer, get_step, ckpt_dir):
    def _handler(signum, frame):
        save(model, optimizer, get_step(), ckpt_dir)
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307
    signal.signal(signal.SIGUSR1, _handler)
