# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""DDP training loop for a ConvNeXt classifier launched with torchrun."""
import os
import signal
import socket
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True


def run(model, train_ds, epochs=90, base_lr=4e-3, bs=128, ckpt="ckpt/convnext.pt"):
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    if rank == 0:
        print(f"[{socket.gethostname()}] world={world}", flush=True)  # ok: MLS308

    lr = base_lr
    if world > 8:
        lr = base_lr * world / 8  # ok: MLS302, MLS303, MLS304, MLS305
    model = DDP(model.cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * (len(train_ds) // (bs * world) + 1))
    sampler = DistributedSampler(train_ds, shuffle=True, seed=0)
    loader = DataLoader(train_ds, batch_size=bs, sampler=sampler, num_workers=8, pin_memory=True)

    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # ok: MLS301
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if _STOP["flag"]:
                break
        if rank == 0:  # ok: MLS307
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, ckpt)
        dist.barrier()  # ok: MLS307
        if _STOP["flag"]:
            dist.destroy_process_group()  # ok: MLS307
            sys.exit(0)  # ok: MLS307
    dist.destroy_process_group()
