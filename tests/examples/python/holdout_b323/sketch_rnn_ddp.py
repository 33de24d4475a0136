# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""DDP training loop for a SketchRNN-style stroke VAE on QuickDraw categories (stroke-5 format)."""
import math
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from sketch.model import SketchVAE


class StrokeDataset(Dataset):
    def __init__(self, npz_path, max_len=200):
        data = np.load(npz_path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.strokes = [s for s in np.split(data["strokes"], data["offsets"][1:-1]) if len(s) <= max_len]

    def __len__(self):
        return len(self.strokes)

    def __getitem__(self, i):
        s = self.strokes[i].astype(np.float32).copy()
        s[:, :2] *= random.uniform(0.9, 1.1)  # ok: MLS309
        return torch.from_numpy(s)


def seed_worker(worker_id):
    np.random.seed(torch.initial_seed() % 2**32)  # ok: MLS301


def run(npz_path, ckpt="ckpt/sketch_vae.pt", steps=100_000, accum=4, base_lr=1e-3, warmup=2000):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    model = torch.nn.parallel.DistributedDataParallel(SketchVAE().cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=base_lr)
    def save_and_exit(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict()}, ckpt)
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, save_and_exit)  # ok: MLS307

    ds = StrokeDataset(npz_path)
    loader = DataLoader(ds, batch_size=100, sampler=(sampler := DistributedSampler(ds)), num_workers=4,
                        worker_init_fn=seed_worker, collate_fn=SketchVAE.pad_batch, drop_last=True)
    step, it = 0, iter(loader)
    while step < steps:
        for g in opt.param_groups:
            g["lr"] = base_lr * min(1.0, (step + 1) / warmup) * (0.9999 ** step)  # ok: MLS302, MLS303, MLS304, MLS305
        for _ in range(accum):
            batch = next(it, None)
            if batch is None:
                sampler.set_epoch(sampler.epoch + 1)
                it = iter(loader)
                batch = next(it)
            recon, kl = model(batch.cuda(non_blocking=True))
            ((recon + 0.5 * (1 - math.exp(-step / 5000)) * kl) / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 5000 == 0:
            if dist.get_rank() == 0:
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict()}, ckpt)  # ok: MLS308
            dist.barrier()  # ok: MLS307
    dist.destroy_process_group()
