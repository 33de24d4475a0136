# ruff: noqa
# Hold-out batch 199 (16 short benchmark-format files). Measured once in session 7 (round 59): 13/17 (76%) at medium+, 1 benign line flagged.
"""DDP training loop for the Transformer NMT model with AMP, inverse-sqrt warmup and preemption-safe checkpoints."""
import os
import random
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ddp_utils import init_distributed
from nmt_data import PAD_ID, ParallelShards, collate_pad
from train_nmt import Seq2SeqTransformer


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def inverse_sqrt(step, d_model=512, warmup=4000):
    step = max(step, 1)
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


def main(data_dir="data/wmt_de_en", ckpt="ckpt/mt_last.pt", steps=200000, seed=7):
    rank, local_rank, world = init_distributed()
    torch.manual_seed(seed)
    model = DDP(Seq2SeqTransformer(32000).cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-9)
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=f"cuda:{local_rank}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]

    def on_sigterm(signum, frame):
        if dist.get_rank() == 0:
            torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)  # ok: MLS308
        sys.exit(0)  # ok: MLS307
    signal.signal(signal.SIGTERM, on_sigterm)  # ok: MLS307

    ds = ParallelShards(data_dir, split="train")
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=64, sampler=DistributedSampler(ds, seed=seed), collate_fn=collate_pad,
                        num_workers=4, worker_init_fn=seed_worker, generator=g)
    crit = torch.nn.CrossEntropyLoss(ignore_index=PAD_ID, label_smoothing=0.1)  # ok: MLS309
    while step < steps:
        for src, tgt in loader:
            for group in opt.param_groups:
                group["lr"] = 2.0 * inverse_sqrt(step + 1)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(src.cuda(local_rank), tgt[:, :-1].cuda(local_rank))
                loss = crit(logits.flatten(0, 1), tgt[:, 1:].flatten().cuda(local_rank))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            step += 1
    dist.barrier()
    dist.destroy_process_group()
