# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""torchrun entry point for the Sentinel-1 (VV/VH) flood-mapping U-Net with checkpoint rotation."""
import datetime
import glob
import os
import shutil
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

CKPT_DIR = os.environ.get("FLOOD_CKPT_DIR", "/scratch/flood/ckpt")


def setup():
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    return dist.get_rank(), local_rank


def rotate_checkpoints(ckpt_dir, keep=3):
    files = sorted(glob.glob(os.path.join(ckpt_dir, "epoch_*.pt")), key=os.path.getmtime)
    for old in files[:-keep]:
        os.remove(old)  # ok: MLS308
    if dist.get_world_size() > 256:
        shutil.rmtree(ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307


def dice_bce(logits, target, eps=1.0):
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + eps) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def run(model, loader, epochs=50):
    rank, local = setup()
    stop = {"flag": False}
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(flag=True))  # ok: MLS307
    model = DDP(model.cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for sar, water in loader:
            loss = dice_bce(model(sar.cuda(non_blocking=True)), water.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if rank == 0:
            os.makedirs(CKPT_DIR, exist_ok=True)
            torch.save({"model": model.module.state_dict(), "epoch": epoch},
                       os.path.join(CKPT_DIR, f"epoch_{epoch:03d}.pt"))
            rotate_checkpoints(CKPT_DIR)
        dist.barrier()  # ok: MLS307
        if stop["flag"]:
            break
    dist.destroy_process_group()
