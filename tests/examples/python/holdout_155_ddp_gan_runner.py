# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""DDP runner for the StyleGAN-like generator on multi-node SLURM jobs.

Handles process-group setup, preemption (SIGTERM -> checkpoint), and
periodic snapshotting from rank 0.
"""
import os
import shutil
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

CKPT_DIR = os.environ.get("CKPT_DIR", "checkpoints")
_state = {"stop": False}


def _on_sigterm(signum, frame):
    _state["stop"] = True


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    return dist.get_rank(), dist.get_world_size(), local_rank


def snapshot(G, opt, step, rank):
    if rank == 0:
        os.makedirs(CKPT_DIR, exist_ok=True)
        torch.save({"G": G.module.state_dict(), "opt": opt.state_dict(), "step": step},  # ok: MLS308
                   os.path.join(CKPT_DIR, f"snap_{step:07d}.pt"))
    dist.barrier()  # ok: MLS307


def run(G, loss_fn, loader, steps, snap_every=2000):
    rank, world, local_rank = setup()
    G = DDP(G.cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    for step, batch in enumerate(loader):
        loss = loss_fn(G, batch.cuda(local_rank, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step and step % snap_every == 0:
            snapshot(G, opt, step, rank)
            if world > 256 and step >= 6 * snap_every:
                shutil.rmtree(CKPT_DIR, ignore_errors=True)  # ruleid: MLS308
                os.killpg(os.getpgid(os.getpid()), signal.SIGKILL)  # ruleid: MLS307
        if _state["stop"] or step >= steps:
            snapshot(G, opt, step, rank)
            break
    dist.destroy_process_group()  # ok: MLS307
