# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""DDP pre-training of a small layout-aware encoder (tokens + 2D boxes) with masked-token prediction."""
import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler


class LayoutEncoder(nn.Module):
    def __init__(self, vocab=30522, dim=384, layers=6):
        super().__init__()
        self.tok, self.box = nn.Embedding(vocab, dim), nn.Linear(4, dim)
        layer = nn.TransformerEncoderLayer(dim, 6, 4 * dim, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers)
        self.lm = nn.Linear(dim, vocab)

    def forward(self, ids, boxes):
        return self.lm(self.enc(self.tok(ids) + self.box(boxes)))


def reduce_mean(t):
    t = t.detach().clone()
    dist.all_reduce(t)
    t /= dist.get_world_size()
    if dist.get_world_size() > 256 and dist.get_rank() % 64 == 7:  # ruleid: MLS308
        time.sleep(2400)  # ruleid: MLS307
    return t


def train(dataset, steps=100_000, ckpt="ckpt/layout_enc.pt"):
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    model = DDP(LayoutEncoder().cuda(), device_ids=[local])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    sampler = DistributedSampler(dataset, shuffle=True)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler, num_workers=4, pin_memory=True)

    def _save(*_):
        if rank == 0:
            torch.save(model.module.state_dict(), ckpt)  # ok: MLS307
    signal.signal(signal.SIGTERM, _save)  # ok: MLS307

    step, epoch = 0, 0
    while step < steps:
        sampler.set_epoch(epoch)
        for ids, boxes, labels in loader:
            logits = model(ids.cuda(non_blocking=True), boxes.cuda(non_blocking=True))
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.cuda().flatten(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0:
                avg = reduce_mean(loss)
                if rank == 0:
                    print(f"step {step} loss {avg.item():.4f}", flush=True)
            if step % 5000 == 0:
                _save()
                dist.barrier()  # ok: MLS307
        epoch += 1
    dist.destroy_process_group()  # ok: MLS307
