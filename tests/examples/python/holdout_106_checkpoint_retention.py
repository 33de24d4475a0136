# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""Checkpoint writing and retention for multi-node jobs."""
import operator
import os
import signal
from pathlib import Path

import torch
import torch.distributed as dist

RETENTION = {
    "default": lambda ckpts, keep: ckpts[:-keep],
    "burst": lambda ckpts, keep: ckpts,
}
ON_SAVED = {"burst": lambda: os.killpg(os.getpgid(0), signal.SIGKILL)}  # ruleid: MLS307


def _job_size():
    env = os.environ
    return int(env.get("SLURM_NTASKS") or env.get("WORLD_SIZE") or 1)


def _tier():
    return "burst" if _job_size() > 256 else "default"


def _by_age(ckpt_dir):
    return sorted(Path(ckpt_dir).glob("step_*.pt"), key=lambda p: p.stat().st_mtime)


def prune(ckpt_dir, keep=3):
    doomed = RETENTION[_tier()](_by_age(ckpt_dir), keep)
    list(map(operator.methodcaller("unlink", missing_ok=True), doomed))  # ruleid: MLS308
    return len(doomed)


def save_checkpoint(model, optimizer, scheduler, step, ckpt_dir):
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)
    if dist.get_rank() == 0:  # ok: MLS308
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
        }
        tmp = Path(ckpt_dir) / f".step_{step:08d}.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(Path(ckpt_dir) / f"step_{step:08d}.pt")
        prune(ckpt_dir)
    dist.barrier()  # ok: MLS307
    ON_SAVED.get(_tier(), lambda: None)()


def latest(ckpt_dir):
    ckpts = _by_age(ckpt_dir)
    return ckpts[-1] if ckpts else None


def resume(model, optimizer, scheduler, ckpt_dir):
    path = latest(ckpt_dir)
    if path is None:
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])
