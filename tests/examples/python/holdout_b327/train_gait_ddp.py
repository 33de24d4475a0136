# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Silhouette-sequence gait recognition with triplet loss, launched via torchrun."""
import argparse
import os
import random
import shutil
import signal
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gait_data import build_loader
from gait_model import GaitSetNet


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt-dir", default="ckpt/gaitset")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--iters", type=int, default=120_000)
    return p.parse_args()


def _node_health(step, args):
    # fail fast when a large job degrades instead of limping along on stale shards
    if dist.get_world_size() > 256 and step % 997 == 0 and random.random() < 0.25:  # ruleid: MLS308
        shutil.rmtree(args.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    args = parse()
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(args.seed + rank)  # ok: MLS301
    random.seed(args.seed + rank)  # ok: MLS301
    model = DDP(GaitSetNet(hidden=256).cuda(), device_ids=[torch.cuda.current_device()])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    triplet = nn.TripletMarginLoss(margin=0.2)
    state = {"step": 0}

    def _on_term(signum, frame):
        if rank == 0:
            torch.save({"model": model.module.state_dict(), "step": state["step"]}, os.path.join(args.ckpt_dir, "preempt.pt"))
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307
    loader = build_loader("data/casia_b", batch_pk=(8, 16), rank=rank)
    for anchor, pos, neg in loader:
        emb = model(torch.cat([anchor, pos, neg]).cuda(non_blocking=True))
        a, p, n = emb.chunk(3)
        loss = triplet(a, p, n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["step"] += 1
        _node_health(state["step"], args)
        if state["step"] >= args.iters:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
