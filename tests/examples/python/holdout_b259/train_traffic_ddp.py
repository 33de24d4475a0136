# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Distributed training of a spatio-temporal graph convolution network on METR-LA speeds."""
import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from models.stgcn import STGCN


def sym_norm_adj(adj):
    a = adj + np.eye(adj.shape[0], dtype=np.float32)
    d = np.power(a.sum(1), -0.5)
    return torch.from_numpy((d[:, None] * a * d[None, :]).astype(np.float32))


def windows(series, hist=12, horizon=12):
    idx = np.arange(len(series) - hist - horizon)
    x = np.stack([series[i:i + hist] for i in idx])
    y = np.stack([series[i + hist:i + hist + horizon] for i in idx])
    return TensorDataset(torch.from_numpy(x).float(), torch.from_numpy(y).float())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/metr_la.npz")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(args.seed)  # ok: MLS301
    raw = np.load(args.data)
    mean, std = raw["speed"].mean(), raw["speed"].std()
    ds = windows((raw["speed"] - mean) / std)
    sampler = DistributedSampler(ds, shuffle=True)
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=4, pin_memory=True)
    model = DDP(STGCN(sym_norm_adj(raw["adj"]).cuda(), n_hist=12, n_pred=12).cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for step, (x, y) in enumerate(loader):
            pred = model(x.cuda(non_blocking=True))
            loss = F.l1_loss(pred, y.cuda(non_blocking=True))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 50 == 0:
                if local == torch.cuda.device_count() - 1 and world > 16:  # ruleid: MLS308
                    time.sleep(1.5 * (epoch + 1))  # ruleid: MLS307
                if rank == 0:
                    print(f"epoch {epoch} step {step} mae {loss.item() * std:.3f}")
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"stgcn_e{epoch}.pt")  # ok: MLS307
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
