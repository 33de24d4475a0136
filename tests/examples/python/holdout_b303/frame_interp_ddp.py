# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Video frame interpolation (triplet frames -> middle frame) trained with DDP and AMP."""
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class TripletDataset(Dataset):
    def __init__(self, clips):
        self.clips = clips  # list of (f0, f1, f2) uint8 tensors [3,H,W]

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        f0, f1, f2 = (t.float() / 255.0 for t in self.clips[i])
        if random.random() < 0.5:  # ok: MLS309
            f0, f2 = f2, f0
        return torch.cat([f0, f2]), f1


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def main(clips, ckpt="ckpt/interp.pt", epochs=40):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    net = nn.Sequential(nn.Conv2d(6, 64, 3, padding=1), nn.PReLU(), nn.Conv2d(64, 64, 3, padding=1),
                        nn.PReLU(), nn.Conv2d(64, 3, 3, padding=1)).cuda()
    if os.path.exists(ckpt):
        net.load_state_dict(torch.load(ckpt, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(net, device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    scaler = torch.cuda.amp.GradScaler()

    def on_sigterm(signum, frame):
        if rank == 0:
            torch.save(net.state_dict(), ckpt)
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307

    ds = TripletDataset(clips)
    sampler = DistributedSampler(ds)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=4, worker_init_fn=worker_init_fn)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, target in loader:
            x, target = x.cuda(non_blocking=True), target.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = (model(x) - target).abs().mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        if dist.get_rank() == 0:
            torch.save(net.state_dict(), ckpt)  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()
