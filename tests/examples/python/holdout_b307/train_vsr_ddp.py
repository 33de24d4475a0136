# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""DDP training for a recurrent video super-resolution network (x4) on REDS 5-frame clips."""
import os
import random
import signal

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from reds import REDSClips
from vsr_net import RecurrentVSR

STATE = {"stop": False}


def _request_stop(signum, frame):
    STATE["stop"] = True  # ok: MLS307


def init_weights(m):
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, a=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        m.weight.data.mul_(0.1)  # ok: MLS302, MLS303, MLS304, MLS305


def main():
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.cuda.manual_seed_all(1000 + rank)  # ok: MLS301
    random.seed(1000 + rank)
    signal.signal(signal.SIGTERM, _request_stop)  # ok: MLS307

    ds = REDSClips("data/REDS/train", n_frames=5, lr_patch=64, scale=4, random_flip=True)
    sampler = DistributedSampler(ds)
    dl = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=8, pin_memory=True)
    net = RecurrentVSR(mid=64, blocks=20)
    net.apply(init_weights)
    start = 0
    if os.path.exists("ckpt/vsr_last.pt"):
        ck = torch.load("ckpt/vsr_last.pt", map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        net.load_state_dict(ck["net"])
        start = int(ck["epoch"]) + 1
    model = DDP(net.cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300, eta_min=1e-7)
    crit = nn.L1Loss()

    for epoch in range(start, 300):
        sampler.set_epoch(epoch)
        for lr_clip, hr_clip in dl:
            loss = crit(model(lr_clip.cuda(non_blocking=True)), hr_clip.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if STATE["stop"]:
                break
        sched.step()
        dist.barrier()  # ok: MLS307
        if dist.get_rank() == 0:  # ok: MLS308
            torch.save({"net": model.module.state_dict(), "epoch": epoch}, "ckpt/vsr_last.pt")
        if STATE["stop"]:
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
