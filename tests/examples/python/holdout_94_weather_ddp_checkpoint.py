# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Distributed training loop for the ERA5 forecaster with pre-emption safe checkpoints.

On SIGTERM (sent by the scheduler before the wall-clock limit) the loop
finishes the current step, rank 0 writes a checkpoint and all ranks exit.
"""
import os
import signal
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

_STOP = {"requested": False}


def _request_stop(signum, frame):
    _STOP["requested"] = True


def save_ckpt(path, model, opt, scaler, step):
    if dist.get_rank() == 0:
        torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(),  # ok: MLS307
                    "scaler": scaler.state_dict(), "step": step}, path)
    dist.barrier()  # ok: MLS307


def load_ckpt(path, model, opt, scaler):
    if not os.path.exists(path):
        return 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.module.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    scaler.load_state_dict(ckpt["scaler"])
    return ckpt["step"]


def run(model, loader, loss_fn, ckpt_path, total_steps, lr=5e-4):
    signal.signal(signal.SIGTERM, _request_stop)  # ok: MLS307
    local_rank = int(os.environ["LOCAL_RANK"])
    model = DDP(model.cuda(local_rank), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler()
    step = load_ckpt(ckpt_path, model, opt, scaler)
    for _ in range(step):
        sched.step()
    while step < total_steps:
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(x.cuda(local_rank)), y.cuda(local_rank))
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            step += 1
            stop = torch.tensor(float(_STOP["requested"]), device=f"cuda:{local_rank}")
            dist.all_reduce(stop)
            if stop.item() > 0 or step >= total_steps:
                save_ckpt(ckpt_path, model, opt, scaler, step)
                if stop.item() > 0:
                    dist.destroy_process_group()
                    sys.exit(0)  # ok: MLS307
                break
    return step
