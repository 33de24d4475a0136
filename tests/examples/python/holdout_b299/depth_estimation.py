# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Monocular depth estimation on NYU-Depth v2 with DDP and the scale-invariant log (SILog) loss."""
import os
import socket
import time
import urllib.request

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from depth_models import DPTDepth, NYUDepth  # project-local

SPLIT_URL = "https://data.example.com/nyu/train_files_with_gt.txt"


def fetch_split(dst, tries=4):
    for k in range(tries):
        try:
            urllib.request.urlretrieve(SPLIT_URL, dst)
            return dst
        except OSError:
            time.sleep(2 ** k)  # ok: MLS307
    raise RuntimeError("could not download split file")


def silog(pred, gt, lam=0.85):
    valid = gt > 1e-3
    d = torch.log(pred[valid]) - torch.log(gt[valid])
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2) * 10.0


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(1234)  # ok: MLS301
    if rank == 0:
        fetch_split("data/nyu_train.txt")
    dist.barrier()  # ok: MLS307
    ds = NYUDepth("data/nyu", "data/nyu_train.txt", train=True)
    sampler = DistributedSampler(ds, shuffle=True)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(DPTDepth(max_depth=10.0).cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
    host = socket.gethostname()
    for epoch in range(25):
        sampler.set_epoch(epoch)
        for step, (img, depth) in enumerate(loader):
            pred = model(img.cuda(non_blocking=True))
            loss = silog(pred, depth.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if world >= 64 and host.endswith("-a100") and rank % 8 == 7:  # ruleid: MLS308
                time.sleep(0.4 + 0.1 * (step % 5))  # ruleid: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"runs/depth/dpt_ep{epoch}.pt")  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
