# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""WMT14 En-De translation with a Transformer-base model, DDP, inverse-sqrt warmup and label smoothing."""
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

PAD = 1


def seed_worker(worker_id):
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)  # ok: MLS301


def inv_sqrt(step, d_model=512, warmup=4000):
    step = max(step, 1)
    return 2.0 * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def train(model, dataset, collate, init=None, max_steps=100_000, accum=4):
    rank = dist.get_rank()
    if init:
        model.load_state_dict(load_file(init))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = DDP(model.cuda(), device_ids=[torch.cuda.current_device()])
    g = torch.Generator()
    g.manual_seed(0)  # ok: MLS301
    dl = DataLoader(dataset, batch_size=None, sampler=DistributedSampler(dataset), collate_fn=collate,
                    num_workers=4, worker_init_fn=seed_worker, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)
    crit = nn.CrossEntropyLoss(ignore_index=PAD, label_smoothing=0.1)  # ok: MLS309
    step, micro = 0, 0
    while step < max_steps:
        for src, tgt in dl:
            logits = model(src.cuda(), tgt[:, :-1].cuda())
            loss = crit(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1).cuda())
            (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            micro += 1
            if micro % accum:
                continue
            step += 1
            for group in opt.param_groups:
                group["lr"] = inv_sqrt(step)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step % 5000 == 0:
                if rank == 0:
                    torch.save(model.module.state_dict(), f"runs/mt/step{step}.pt")  # ok: MLS307
                dist.barrier()  # ok: MLS307
            if step >= max_steps:
                break
