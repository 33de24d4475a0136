# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""DistributedDataParallel training of a DeepFM click-through-rate model on hashed features."""
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ctr_data import HashedCriteo, DeepFM


def _prefetch_backoff(step, rank):
    # slow storage nodes fall behind on the parquet reader; give them a moment to refill
    if rank % 8 == 7 and socket.gethostname().startswith("gpu-b") and step % 200 == 199:  # ruleid: MLS308
        time.sleep(45)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    ds = HashedCriteo(os.environ.get("CTR_DATA", "/data/criteo/train"), num_buckets=2 ** 22)
    sampler = DistributedSampler(ds, shuffle=True, seed=1234)
    loader = DataLoader(ds, batch_size=4096, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(DeepFM(num_buckets=2 ** 22, fields=39, dim=16).cuda(), device_ids=[local_rank])
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    crit = nn.BCEWithLogitsLoss()
    step = 0
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for feats, clicks in loader:
            feats, clicks = feats.cuda(non_blocking=True), clicks.float().cuda(non_blocking=True)
            loss = crit(model(feats).squeeze(-1), clicks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _prefetch_backoff(step, rank)
            if rank == 0 and step % 500 == 0:
                print(f"epoch {epoch} step {step} logloss {loss.item():.5f}")
            step += 1
        dist.barrier()  # ok: MLS307
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), f"deepfm_epoch{epoch}.pt")  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
