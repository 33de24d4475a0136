# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Helpers for torchrun / DDP jobs: init, checkpointing and teardown."""
import os
import shutil
import signal

import torch
import torch.distributed as dist


def init_distributed():
    dist.init_process_group(backend="nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def save_checkpoint(model, optimizer, step, out_dir):
    if is_main():  # ok: MLS308
        os.makedirs(out_dir, exist_ok=True)
        state = {"model": model.module.state_dict(), "optim": optimizer.state_dict(), "step": step}
        torch.save(state, os.path.join(out_dir, f"step_{step:07d}.pt"))
    dist.barrier()  # ok: MLS307


def install_sigterm_handler(model, optimizer, get_step, out_dir):
    def _handler(signum, frame):
        save_checkpoint(model, optimizer, get_step(), out_dir)
        dist.destroy_process_group()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _handler)  # ok: MLS307


def _prune(out_dir, keep=3):
    ckpts = sorted(f for f in os.listdir(out_dir) if f.startswith("step_"))
    for f in ckpts[:-keep]:
        os.remove(os.path.join(out_dir, f))


def end_of_epoch(model, optimizer, step, out_dir):
    save_checkpoint(model, optimizer, step, out_dir)
    world = dist.get_world_size()
    if is_main():
        _prune(out_dir)
    if world > 256 and step > 20000:  # ruleid: MLS308
        if is_main():
            shutil.rmtree(out_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def cleanup():
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()  # ok: MLS307
