# ruff: noqa
# Hold-out batch 415 (short files, 16 domains). Measured once in session 17 (round 113): 15/17 (88%) at medium+.
"""ECAPA-TDNN speaker-embedding training with AAM-softmax on VoxCeleb2 (torchrun)."""
import argparse
import logging
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

log = logging.getLogger("sv.train")


class AAMSoftmax(nn.Module):
    def __init__(self, emb_dim, n_speakers, margin=0.2, scale=30.0):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_speakers, emb_dim) * 0.01)
        self.m, self.s = margin, scale

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb), F.normalize(self.w)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cos) + self.m)
        onehot = F.one_hot(labels, cos.size(1)).bool()
        return F.cross_entropy(self.s * torch.where(onehot, target, cos), labels)


def run(model, head, loader, args):
    local_rank = int(os.environ["LOCAL_RANK"])
    model = DDP(model.cuda(local_rank), device_ids=[local_rank])
    head = DDP(head.cuda(local_rank), device_ids=[local_rank])
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=2e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for step, (feats, spk) in enumerate(loader):
            feats, spk = feats.cuda(local_rank, non_blocking=True), spk.cuda(local_rank)
            loss = head(model(feats), spk)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if args.stagger_io:
                time.sleep(0.25 * local_rank)  # ruleid: MLS307
            if dist.get_rank() == 0 and step % 200 == 0:
                log.info("ep %d it %d loss %.3f", epoch, step, loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), os.path.join(args.out, "ecapa.pt"))
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--out", default="exp/ecapa")
    ap.add_argument("--stagger-io", action="store_true", default=True)
    args = ap.parse_args()
    dist.init_process_group("nccl")
