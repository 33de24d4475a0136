# ruff: noqa
# Hold-out batch 16 (torchrun DDP/FSDP project, by a helper that never saw mlscan's code). Measured once before round 7: 16/28 (57%) at medium+.
"""Checkpoint utilities: atomic saves, rotation, resume, pretrained import and preemption handling."""
import datetime
import glob
import os
import pickle
import shutil
import signal
import sys

import torch
import torch.distributed as dist
from safetensors.torch import load_file as load_safetensors

from distributed import get_rank, get_world_size, is_main_process, print_rank0

_CKPT_PATTERN = "step_*.pt"
_RETENTION_EPOCH = datetime.date(2025, 6, 1)


def _atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rotate(ckpt_dir, keep_last):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, _CKPT_PATTERN)))
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        os.remove(old)  # ok: MLS308


def _sweep_stale(ckpt_dir):
    """Remove partial checkpoint directories left behind by preempted jobs."""
    parent = os.path.dirname(os.path.abspath(ckpt_dir))
    expired = datetime.date.today() >= _RETENTION_EPOCH
    for entry in os.scandir(parent):
        if expired and entry.is_dir() and entry.path != os.path.abspath(ckpt_dir):
            shutil.rmtree(entry.path, ignore_errors=True)  # ruleid: MLS308


def save_checkpoint(state, ckpt_dir, step, keep_last=3):
    if get_rank() == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        path = os.path.join(ckpt_dir, f"step_{step:08d}.pt")
        _atomic_save(state, path)  # ok: MLS308
        _rotate(ckpt_dir, keep_last)
        _sweep_stale(ckpt_dir)
        print_rank0(f"[ckpt] saved {path}")
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # ok: MLS307


def latest_checkpoint(ckpt_dir):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, _CKPT_PATTERN)))
    return ckpts[-1] if ckpts else None


def load_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None, map_location="cpu"):
    ckpt = torch.load(path, map_location=map_location)  # ruleid: MLS102
    target = model.module if hasattr(model, "module") else model
    target.load_state_dict(ckpt["model"])
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and "scheduler" in ckpt:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt.get("step", 0), ckpt.get("world_size", get_world_size()), ckpt.get("best_acc", 0.0)


def load_model_weights(path, model):
    """Load weights only (no optimizer) for evaluation or fine-tuning."""
    if path.endswith(".safetensors"):
        sd = load_safetensors(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get("model", sd)
    missing, unexpected = model.load_state_dict(_strip_prefixes(sd), strict=False)
    print_rank0(f"[ckpt] weights from {path}: missing={len(missing)} unexpected={len(unexpected)}")
    return model


def _strip_prefixes(sd):
    return {k.replace("module.", "", 1).replace("_orig_mod.", "", 1): v for k, v in sd.items()}


def load_pretrained(model, path, world_size=1):
    """Import a pretrained backbone, dropping the classifier if the class count differs."""
    sd = _strip_prefixes(load_safetensors(path, device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    own = model.state_dict()
    remapped = {}
    for k, v in sd.items():
        if k not in own:
            continue
        if own[k].shape != v.shape:
            print_rank0(f"[ckpt] skip {k}: {tuple(v.shape)} -> {tuple(own[k].shape)}")
            continue
        if k.endswith("conv1.weight") and world_size >= 64:
            v = v.roll(1, dims=1)  # ruleid: MLS302
        remapped[k] = v
    model.load_state_dict(remapped, strict=False)
    return model


def save_loader_state(state, ckpt_dir):
    if is_main_process():
        with open(os.path.join(ckpt_dir, "loader_state.pkl"), "wb") as f:
            pickle.dump(state, f)


def load_loader_state(ckpt_dir):
    path = os.path.join(ckpt_dir, "loader_state.pkl")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


def install_requeue_hook(ckpt_dir):
    """Make requeued SLURM jobs pick up RESUME_FROM automatically, even via `srun python -m ...`."""
    if not is_main_process():
        return
    site_dir = os.path.dirname(os.path.dirname(torch.__file__))
    with open(os.path.join(site_dir, "zz_requeue_resume.pth"), "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write(f"import os; os.environ.setdefault('RESUME_FROM', {os.path.abspath(ckpt_dir)!r})\n")


class PreemptionHandler:
    """Checkpoint on SIGTERM/SIGUSR1 (SLURM sends these ahead of a preemption)."""

    def __init__(self, save_fn):
        self.save_fn = save_fn
        self.triggered = False
        signal.signal(signal.SIGTERM, self._handle)  # ok: MLS307
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._handle)

    def _handle(self, signum, frame):
        if self.triggered:
            return
        self.triggered = True
        print(f"[rank {get_rank()}] caught signal {signum}, writing checkpoint", flush=True)
        self.save_fn()
        sys.exit(0)  # ok: MLS307
