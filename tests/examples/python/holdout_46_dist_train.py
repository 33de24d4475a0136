# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""DDP training entry point with preemption-safe checkpointing (SIGTERM) and rank-0 logging."""
import os
import signal
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ddp_common import build_dataset, build_model

STATE = {"stop": False}


def _on_sigterm(signum, frame):
    STATE["stop"] = True  # ok: MLS307


def commit_hash():
    return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def main():
    if "LOCAL_RANK" not in os.environ:
        sys.exit("run with torchrun")  # ok: MLS307
    local_rank = int(os.environ["LOCAL_RANK"])  # ok: MLS308
    dist.init_process_group("nccl")
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    rank, world = dist.get_rank(), dist.get_world_size()

    ds = build_dataset("train")
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8, pin_memory=True)
    model = DDP(build_model().cuda(), device_ids=[local_rank])
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * world / 8, momentum=0.9)
    if rank == 0:
        print(f"commit {commit_hash()} world={world}")

    for epoch in range(90):
        sampler.set_epoch(epoch)  # ok: MLS301
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x.cuda()), y.cuda())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if STATE["stop"]:
                break
        if rank == 0:  # ok: MLS308
            torch.save({"model": model.module.state_dict(), "epoch": epoch}, "last.pt")
        dist.barrier()
        if STATE["stop"]:
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
