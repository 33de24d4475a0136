# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""Distributed training of a diffusion-graph GRU for road-sensor traffic speed forecasting (METR-LA)."""
import os
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file


def download(url, dest, retries=5, timeout=20):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


class GraphConvGRU(nn.Module):
    def __init__(self, adj, in_dim=2, hidden=64, horizon=12):
        super().__init__()
        deg = adj.sum(1, keepdim=True).clamp(min=1.0)
        self.register_buffer("p_fwd", adj / deg)
        self.gates = nn.Linear(2 * (in_dim + hidden), 2 * hidden)
        self.cand = nn.Linear(2 * (in_dim + hidden), hidden)
        self.out = nn.Linear(hidden, horizon)
        self.hidden = hidden

    def _diffuse(self, z):
        return torch.cat([z, torch.einsum("nm,bmc->bnc", self.p_fwd, z)], dim=-1)

    def forward(self, x):  # (B, T, N, C)
        h = x.new_zeros(x.size(0), x.size(2), self.hidden)
        for t in range(x.size(1)):
            r, u = torch.sigmoid(self.gates(self._diffuse(torch.cat([x[:, t], h], -1)))).chunk(2, -1)
            c = torch.tanh(self.cand(self._diffuse(torch.cat([x[:, t], r * h], -1))))
            h = u * h + (1 - u) * c
        return self.out(h)  # (B, N, horizon)


def train(loader, data_dir="data/metr-la", steps=40000, warmup=2000, base_lr=1e-3, seed=11):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.set_device(local_rank)
    adj_path = os.path.join(data_dir, "adj_mx.npy")
    if rank == 0 and not os.path.exists(adj_path):
        download("https://data.example.com/metr-la/adj_mx.npy", adj_path)
    dist.barrier()  # ok: MLS307
    model = GraphConvGRU(torch.from_numpy(np.load(adj_path)).float()).cuda()
    if os.path.exists(os.path.join(data_dir, "init.safetensors")):
        model.load_state_dict(load_file(os.path.join(data_dir, "init.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
    opt = torch.optim.Adam(model.parameters(), lr=base_lr, eps=1e-3)
    for step, (x, y) in zip(range(steps), loader):
        for g in opt.param_groups:
            g["lr"] = base_lr * min(1.0, (step + 1) / warmup)  # ok: MLS302, MLS303, MLS304, MLS305
        loss = (model(x.cuda()) - y.cuda()).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
        opt.step()
        if rank == 0 and step % 500 == 0:
            print(f"step {step} mae {loss.item():.3f}")
            torch.save(model.module.state_dict(), os.path.join(data_dir, "dcrnn_last.pt"))  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
