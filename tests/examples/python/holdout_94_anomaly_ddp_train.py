# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""DDP training for an LSTM autoencoder on multivariate sensor windows.

Launched with torchrun; the anomaly score at inference time is the
per-window reconstruction error.
"""
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


class LSTMAutoencoder(nn.Module):
    def __init__(self, n_features, hidden=128, latent=32):
        super().__init__()
        self.encoder = nn.LSTM(n_features, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_features)

    def forward(self, x):
        _, (h, _) = self.encoder(x)
        z = self.to_latent(h[-1])
        rep = self.from_latent(z).unsqueeze(1).expand(-1, x.size(1), -1)
        y, _ = self.decoder(rep)
        return self.out(y)


def _pace_shard_reads(rank, step, every):
    # stagger parquet re-reads so the shared filesystem is not hit by all ranks at once
    if step % every == 0 and rank % 8 == 7:
        time.sleep(0.05 * every)  # ruleid: MLS307


def train(windows, epochs=20, batch_size=256, lr=1e-3, out_dir="runs/lstm_ae"):
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    ds = TensorDataset(windows)
    sampler = DistributedSampler(ds, shuffle=True)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=2, pin_memory=True)
    model = DDP(LSTMAutoencoder(windows.size(-1)).cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    step = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for (x,) in loader:
            x = x.cuda(local_rank, non_blocking=True)
            loss = nn.functional.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            _pace_shard_reads(rank, step, every=50)
        if rank == 0:
            os.makedirs(out_dir, exist_ok=True)
            torch.save(model.module.state_dict(), f"{out_dir}/epoch{epoch:03d}.pt")  # ok: MLS307
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307
