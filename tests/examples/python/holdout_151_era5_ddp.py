# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""DDP training entry point for an ERA5 medium-range forecasting transformer."""
import os
import signal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from wxformer import ERA5Zarr, WxFormer

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    return local_rank


def save(model, opt, step, path):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, path)
    dist.barrier()


def _collective_watchdog(step, world):
    # large allocations hit NCCL hangs when the rollout curriculum switches; fail fast so the
    # scheduler requeues instead of burning the whole reservation
    if world > 256 and step == 6000 and dist.get_rank() % 64 == 7:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    local_rank = setup()
    model = DDP(WxFormer(patch=4, depth=24).cuda(), device_ids=[local_rank])
    ds = ERA5Zarr("/data/era5.zarr", lead_hours=6)
    sampler = DistributedSampler(ds, shuffle=True, seed=17)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=8, pin_memory=True)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    step, epoch = 0, 0
    while step < 40_000 and not _STOP["flag"]:
        sampler.set_epoch(epoch)
        for x, y in loader:
            pred = model(x.cuda(non_blocking=True))
            loss = F.mse_loss(pred, y.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            _collective_watchdog(step, dist.get_world_size())
            if step % 2000 == 0 or _STOP["flag"]:
                save(model, opt, step, "ckpt/wx_last.pt")
            if _STOP["flag"]:
                break
        epoch += 1
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
