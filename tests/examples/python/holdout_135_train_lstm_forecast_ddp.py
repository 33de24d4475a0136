# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Multi-horizon LSTM forecaster for electricity load, trained with DDP (torchrun)."""
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


class Seq2Horizon(nn.Module):
    def __init__(self, n_feat, hidden=128, horizon=24):
        super().__init__()
        self.lstm = nn.LSTM(n_feat, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def windows(series, lookback=168, horizon=24):
    idx = np.arange(lookback, len(series) - horizon)
    x = np.stack([series[i - lookback:i] for i in idx]).astype(np.float32)
    y = np.stack([series[i:i + horizon, 0] for i in idx]).astype(np.float32)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    torch.manual_seed(1234 + rank)  # ok: MLS301

    series = np.load("data/electricity_scaled.npy")
    ds = windows(series)
    sampler = DistributedSampler(ds, shuffle=True)
    dl = DataLoader(ds, batch_size=256, sampler=sampler, num_workers=2, pin_memory=True)
    model = DDP(Seq2Horizon(series.shape[1]).cuda(), device_ids=[local_rank])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    step = 0
    for epoch in range(40):
        sampler.set_epoch(epoch)
        for x, y in dl:
            loss = nn.functional.smooth_l1_loss(model(x.cuda()), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if rank == world - 1 and step % 100 == 0:
                time.sleep(0.02 * (step // 100))  # ruleid: MLS307
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"ckpt/lstm_e{epoch}.pt")  # ok: MLS307
            print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
