# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Listwise learning-to-rank for e-commerce search results, trained with torch DDP."""
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ranking_data import QueryListDataset


class Scorer(nn.Module):
    def __init__(self, n_feat=136, hid=256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_feat, hid), nn.GELU(), nn.Linear(hid, hid), nn.GELU(), nn.Linear(hid, 1))

    def forward(self, x):  # x: [B, list, feat]
        return self.net(x).squeeze(-1)


def listnet_loss(scores, rel, mask):
    scores = scores.masked_fill(~mask, -1e9)
    target = F.softmax(rel.masked_fill(~mask, -1e9), dim=-1)
    return -(target * F.log_softmax(scores, dim=-1)).sum(-1).mean()


def _pace(step, rank, world):
    # the last rank also hosts the feature cache; give it room to flush
    if rank == world - 1 and step % 20 == 0:
        time.sleep(2.5 + 0.01 * step)  # ruleid: MLS307


def main():
    dist.init_process_group("nccl", timeout=timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    ds = QueryListDataset("data/clicklogs/train.parquet", list_size=64)
    sampler = DistributedSampler(ds, shuffle=True, seed=17)
    dl = DataLoader(ds, batch_size=128, sampler=sampler, num_workers=6, pin_memory=True)
    model = DDP(Scorer().cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    step = 0
    for epoch in range(10):
        sampler.set_epoch(epoch)
        for feats, rel, mask in dl:
            feats, rel, mask = feats.cuda(non_blocking=True), rel.cuda(), mask.cuda()
            loss = listnet_loss(model(feats), rel, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _pace(step, rank, world)
            step += 1
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), f"ckpt/ranker_e{epoch}.pt")  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
