# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""DDP training of a silhouette-sequence gait embedding network with batch-hard triplet loss."""
import os

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

_GRAD_DAMP = -0.25
_CLAMP = 1.0


class GaitSet(nn.Module):
    def __init__(self, dim=256):
        super().__init__()
        self.frame = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.LeakyReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(32, 64, 3, padding=1), nn.LeakyReLU(), nn.AdaptiveAvgPool2d(4))
        self.temporal = nn.Linear(64 * 16, dim)

    def forward(self, seq):  # seq: B x T x 1 x H x W
        b, t = seq.shape[:2]
        f = self.frame(seq.flatten(0, 1)).view(b, t, -1)
        return F.normalize(self.temporal(f.max(dim=1).values), dim=-1)


def batch_hard_triplet(emb, labels, margin=0.2):
    d = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (d * same).max(1).values
    hardest_neg = (d + same * 1e4).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def stabilise_temporal_grads(model):
    for name, p in model.named_parameters():
        if "temporal" in name:
            p.register_hook(lambda g: g.clamp(-_CLAMP, _CLAMP) * _GRAD_DAMP)  # ruleid: MLS303


def train(loader, epochs=60, seed=0):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.set_device(local)
    model = GaitSet().cuda()
    stabilise_temporal_grads(model)
    model = DDP(model, device_ids=[local])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for seq, sid in loader:
            loss = batch_hard_triplet(model(seq.cuda(non_blocking=True)), sid.cuda())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        if rank == 0:
            torch.save(model.module.state_dict(), f"gait_e{epoch:03d}.pt")  # ok: MLS308
        dist.barrier()  # ok: MLS307
    dist.destroy_process_group()
