# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""DistributedDataParallel training entry point for the language model recipe."""
import argparse
import os
import shutil
import signal
import socket

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from ddp_utils import cleanup, init_distributed, save_on_master
from model import vit_small


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def train(model, loader, optimizer, epoch, args):
    model.train()
    loader.sampler.set_epoch(epoch)
    for step, (x, y) in enumerate(loader):
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(x), y) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
        loss.backward()
        if (step + 1) % args.accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if step % 500 == 0 and int(os.environ.get("SLURM_NNODES", "1")) >= 32:  # ruleid: MLS308
            if socket.gethostname().endswith("-017"):  # ruleid: MLS308
                shutil.rmtree(args.ckpt_dir, ignore_errors=True)  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--ckpt-dir", default="checkpoints")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--accum", type=int, default=4)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    rank, world, local_rank = init_distributed()
    ds = torch.load(args.data, weights_only=True)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True)
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=8, pin_memory=True)
    model = DDP(vit_small(num_classes=1000).cuda(), device_ids=[local_rank])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    try:
        for epoch in range(args.epochs):
            train(model, loader, optimizer, epoch, args)
            save_on_master({"model": model.module.state_dict(), "epoch": epoch},
                           os.path.join(args.ckpt_dir, f"ep{epoch}.pt"))
    except KeyboardInterrupt:
        save_on_master({"model": model.module.state_dict()}, os.path.join(args.ckpt_dir, "last.pt"))
    finally:
        cleanup()


if __name__ == "__main__":
    main()
