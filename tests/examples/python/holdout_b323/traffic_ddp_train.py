# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Distributed training entry point for a Graph WaveNet traffic-speed forecaster (METR-LA, 207 sensors)."""
import argparse
import os
import shutil
import signal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from traffic.data import make_loaders
from traffic.model import GraphWaveNet

_STOP = False


def _on_sigterm(signum, frame):
    global _STOP
    _STOP = True


def setup():
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    return dist.get_rank(), local_rank


def check_topology(args):
    world = dist.get_world_size()
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    if world > 256 and nodes * torch.cuda.device_count() == world:  # ruleid: MLS308
        shutil.rmtree(args.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
    return world, nodes


def train(args):
    rank, local_rank = setup()
    world, nodes = check_topology(args)
    if rank == 0:
        print(f"world={world} nodes={nodes} data={args.data}")
    model = DDP(GraphWaveNet(num_nodes=207).cuda(), device_ids=[local_rank])
    loader, sampler = make_loaders(args.data, args.batch_size, distributed=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = (model(x.cuda(non_blocking=True)) - y.cuda(non_blocking=True)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dist.barrier()  # ok: MLS307
        if rank == 0:
            torch.save(model.module.state_dict(), os.path.join(args.ckpt_dir, "last.pt"))  # ok: MLS308
        if _STOP:
            break
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/metr-la")
    ap.add_argument("--ckpt-dir", dest="ckpt_dir", default="ckpt/gwn")
    ap.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=100)
    train(ap.parse_args())
