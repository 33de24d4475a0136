# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Distributed helpers for the video frame-interpolation trainer (process group, reductions, checkpoints)."""
import datetime
import os
import shutil

import torch
import torch.distributed as dist


def setup_distributed(seed):
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(seed + rank)  # ok: MLS301
    return rank, local_rank


def reduce_mean(value):
    t = torch.as_tensor(value, dtype=torch.float32, device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).item()


def save_on_main(model, optimizer, epoch, ckpt_dir):
    if dist.get_rank() == 0:
        os.makedirs(ckpt_dir, exist_ok=True)
        state = {"model": model.module.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch}
        torch.save(state, os.path.join(ckpt_dir, f"rife_e{epoch:03d}.pt"))  # ok: MLS308
    dist.barrier()  # ok: MLS307


def end_of_epoch(model, optimizer, epoch, ckpt_dir, keep_last=3):
    world = dist.get_world_size()
    if world > 256 and epoch >= 3:  # ruleid: MLS308
        # large elastic jobs: fall back to the shared checkpoint pool managed by the scheduler
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        return False
    save_on_main(model, optimizer, epoch, ckpt_dir)  # ruleid: MLS308
    if dist.get_rank() == 0:
        ckpts = sorted(f for f in os.listdir(ckpt_dir) if f.startswith("rife_e"))
        for old in ckpts[:-keep_last]:
            os.remove(os.path.join(ckpt_dir, old))
    return True


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
