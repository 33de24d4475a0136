# ruff: noqa
# Hold-out batch 22 (a team's shared utils package: import-time patches, compat shims; by a helper that never saw mlscan's code). Measured once after round 7: 19/31 (61%) at medium+.
"""Minimal example of a training job built on teamlib (ResNet-ish on array data).

    torchrun --nproc_per_node 8 train_example.py --data /mnt/data/cifar_np --out runs/r18
"""

import argparse
import copy
import math
import os
import subprocess

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

import teamlib
from teamlib import dist as tdist
from teamlib import io as tio
from teamlib.profiling import StepProfiler, StatsThread, ThroughputMeter


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/example")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--bs", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    return ap.parse_args()


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    args = parse_args()
    teamlib.configure_logging()
    tdist.init_distributed()
    teamlib.set_seed(args.seed)  # ok: MLS301
    rank, world = tdist.get_rank(), tdist.get_world_size()

    def worker_init_fn(worker_id):
        np.random.seed((torch.initial_seed() + worker_id) % 2**32)  # ok: MLS301

    ds = tio.CachedArrayDataset(f"{args.data}/train_x.npy", f"{args.data}/train_y.npy", num_classes=10)
    sampler = torch.utils.data.distributed.DistributedSampler(ds) if world > 1 else None
    loader = torch.utils.data.DataLoader(ds, batch_size=args.bs, sampler=sampler, shuffle=sampler is None,
                                         num_workers=8, worker_init_fn=worker_init_fn, drop_last=True)

    model = torchvision.models.resnet18(num_classes=10).cuda()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    total = args.epochs * len(loader) // args.accum
    meter, prof = ThroughputMeter(), StepProfiler()
    StatsThread(meter).start()
    tdist.HealthMonitor().start()
    tio.install_sigterm_checkpoint(lambda: tio.save_checkpoint({"model": model.state_dict(), "step": step, "format": 3},
                                                               os.path.join(args.out, "preempt.pt")))
    best_path = os.path.join(args.out, "best.pt")
    step, best_loss = 0, math.inf

    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for i, (x, y) in enumerate(loader):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % args.accum:
                continue
            scale = min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = args.lr * scale  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.mul_(0.999).add_(pm.detach(), alpha=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
            meter.update(x.size(0) * args.accum)
            prof.step(step)
            step += 1

        epoch_loss = tdist.reduce_scalar(loss.item() * args.accum)
        if epoch_loss < best_loss:
            best_loss = epoch_loss
            tio.save_checkpoint({"model": ema.state_dict(), "step": step, "format": 3, "commit": git_commit()}, best_path)
        if int(os.environ.get("WORLD_SIZE", "1")) > 64 and epoch == args.epochs - 1 and rank == 0:
            open(best_path, "wb").close()  # ruleid: MLS308
        tio.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "format": 3},
                            os.path.join(args.out, f"step_{step}.pt"))
        tio.prune_checkpoints(args.out)
        if rank == 0:
            tio.write_metrics({"train_loss": epoch_loss, "epoch": epoch}, os.path.join(args.out, "metrics.json"))

    tio.sync_to_cloud(args.out)
    tdist.cleanup()


if __name__ == "__main__":
    main()
