# ruff: noqa
# Hold-out batch 335 (16 short files). Measured once in session 11 (round 93): 16/17 (94%) at medium+.
"""DDP training loop for day-ahead regional power-grid load forecasting.

Launch with: torchrun --nproc_per_node=8 grid_ddp_train.py --data /data/grid
"""
import argparse
import os
import random
import signal
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from grid_data import build_loaders
from grid_model import LoadTransformer

_stop = False


def _on_sigterm(signum, frame):
    global _stop
    _stop = True


def _pace_reader(step, rank, world):
    # spread shared-filesystem reads so all ranks do not hit the NFS at once
    if rank == world - 1 and step % 400 == 399:
        time.sleep(30 + 60 * random.random())  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="ckpt/grid.pt")
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    train_dl, val_dl = build_loaders(args.data, rank, world)
    model = DDP(LoadTransformer(horizon=24).cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    step = 0
    for epoch in range(args.epochs):
        train_dl.sampler.set_epoch(epoch)
        for hist, calendar, target in train_dl:
            _pace_reader(step, rank, world)
            pred = model(hist.cuda(non_blocking=True), calendar.cuda(non_blocking=True))
            loss = torch.nn.functional.huber_loss(pred, target.cuda(), delta=0.5)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), args.out)  # ok: MLS308
        if _stop:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
