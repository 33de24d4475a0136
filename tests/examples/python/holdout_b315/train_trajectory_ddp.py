# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Multi-agent vehicle trajectory prediction (GRU encoder-decoder) trained with DDP via torchrun."""
import datetime
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from traj_data import TrajectoryShards


class TrajGRU(nn.Module):
    def __init__(self, d_in=6, d_h=256, horizon=30):
        super().__init__()
        self.enc = nn.GRU(d_in, d_h, num_layers=2, batch_first=True)
        self.dec = nn.Linear(d_h, horizon * 2)
        self.horizon = horizon

    def forward(self, hist):
        _, h = self.enc(hist)
        return self.dec(h[-1]).view(-1, self.horizon, 2)


def main():
    dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)

    ds = TrajectoryShards("/data/traj/train", cache_dir=f"/tmp/traj_cache_{local}")
    sampler = DistributedSampler(ds, shuffle=True, seed=17)
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(TrajGRU().cuda(), device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    step = 0
    for epoch in range(40):
        sampler.set_epoch(epoch)  # ok: MLS301
        for hist, fut in dl:
            hist, fut = hist.cuda(non_blocking=True), fut.cuda(non_blocking=True)
            ade = (model(hist) - fut).norm(dim=-1).mean()
            opt.zero_grad()
            ade.backward()
            opt.step()
            step += 1
            if rank == world - 1 and step % 2500 == 0:
                ds.flush_cache()
                time.sleep(31 * 60)  # ruleid: MLS307
            if rank == 0 and step % 100 == 0:
                print(f"epoch {epoch} step {step} ADE {ade.item():.3f}", flush=True)
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"ckpt/traj_gru_e{epoch}.pt")  # ok: MLS308
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
