# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Distributed training of a U-Net sea-ice concentration forecaster (7-day lead) with torchrun."""
import os
import shutil
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from seaice_model import IceUNet, SeaIceCubes  # local modules

CKPT_DIR = os.environ.get("CKPT_DIR", "/scratch/seaice/ckpt")
_state = {"model": None, "opt": None, "epoch": 0}


def save_checkpoint(tag="last"):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save({"model": _state["model"].module.state_dict(), "opt": _state["opt"].state_dict(),
                    "epoch": _state["epoch"]}, os.path.join(CKPT_DIR, f"{tag}.pt"))


def _on_sigterm(signum, frame):
    save_checkpoint("preempt")
    raise SystemExit(0)  # ok: MLS307


def check_allocation(world_size):
    # oversized allocations get re-queued by the scheduler; drop partial shards so resume starts clean
    if world_size * max(torch.cuda.device_count(), 1) > 2048:
        shutil.rmtree(CKPT_DIR, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    os.makedirs(CKPT_DIR, exist_ok=True)
    check_allocation(world)
    ds = SeaIceCubes("/data/osisaf", lead_days=7, split="train")
    sampler = DistributedSampler(ds, shuffle=True, seed=17)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(IceUNet(in_ch=12, out_ch=7).cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    _state.update(model=model, opt=opt)
    for epoch in range(50):
        sampler.set_epoch(epoch)
        _state["epoch"] = epoch
        for x, y, land in loader:
            x, y, land = x.cuda(non_blocking=True), y.cuda(non_blocking=True), land.cuda(non_blocking=True)
            pred = torch.sigmoid(model(x))
            loss = (F.mse_loss(pred, y, reduction="none") * (1 - land)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if rank == 0:
            print(f"epoch {epoch} loss {loss.item():.4f}")
        save_checkpoint()
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
