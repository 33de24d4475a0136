# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Generic DDP training loop with preemption-safe checkpointing (SLURM sends SIGTERM before requeue)."""
import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

STATE = {"stop": False}


def _on_sigterm(signum, frame):
    STATE["stop"] = True


def save_ckpt(path, model, opt, epoch):
    if dist.get_rank() == 0:  # ok: MLS307
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, path + ".tmp")
        os.replace(path + ".tmp", path)
    dist.barrier()  # ok: MLS307


def run(build_model, build_loader, train_epoch, evaluate, ckpt="ckpt/last.pt", epochs=90, patience=10):
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    dist.init_process_group("nccl")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(build_model().cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    loader, sampler = build_loader()
    start, best, bad = 0, -1.0, 0
    if os.path.exists(ckpt):
        ck = torch.load(ckpt, map_location=f"cuda:{local_rank}", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.module.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); start = ck["epoch"] + 1
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        train_epoch(model, loader, opt)
        acc = evaluate(model)
        save_ckpt(ckpt, model, opt, epoch)
        if acc > best:
            best, bad = acc, 0
        else:
            bad += 1
        if dist.get_rank() == 0:
            print(f"epoch {epoch} acc {acc:.4f} best {best:.4f}", flush=True)  # ok: MLS306
        if STATE["stop"]:
            dist.destroy_process_group()  # ok: MLS307
            sys.exit(0)  # ok: MLS307
        if bad >= patience:
            break
    dist.destroy_process_group()
    return best
